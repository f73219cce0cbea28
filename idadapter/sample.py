"""Generate avatars of one consenting subject from one photo, signed and logged.

    python -m idadapter.sample --base PATH --adapter PATH --photo X.jpg --subject ID \\
        --prompt "a photo of a woman on a beach" -n 4 --out DIR

Order of work: the consent gate first (avatar-generation for --subject; a refusal is logged, printed
and exits 3 before the photo is opened; so is a --category the consent record's usage limits do not
allow); then a --photo file must match the subject's photos enrolled
in the vault (identity_check.py; a mismatch is logged, printed and exits 3; with none enrolled the run
goes on with a warning); then generation. Each PNG is C2PA-signed and logged in the audit log before
its line is appended to DIR/manifest.jsonl (the run manifest of docs/contracts.md, which
`python -m eval.score` and `python -m eval.report` read). The reference photo (a file, or a
photo in the governance vault, read through the same gate) is copied into DIR/refs/ so that the
manifest's paths stay inside DIR.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from eval.faces import FaceInputError, load_image
from governance import Actor, ConsentRefused, GovernanceContext, Purpose

from . import __version__
from .identity_check import check_photo_identity
from .pipeline import IDAdapterPipeline, NoFaceInReference

EXIT_REFUSED = 3
EXIT_BAD_INPUT = 2
MANIFEST_NAME = "manifest.jsonl"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="idadapter.sample", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="Stable Diffusion folder (diffusers layout) or local HF-cache id")
    parser.add_argument("--adapter", required=True, help="adapter folder or .safetensors file")
    parser.add_argument("--image-encoder", help="CLIP vision folder (default: the base folder's image_encoder)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--photo", help="the subject's reference photo (a file)")
    source.add_argument("--vault-photo", metavar="FILE_ID",
                        help="the subject's reference photo in the governance vault (read through the consent gate)")
    parser.add_argument("--subject", required=True, help="the subject's id in the consent registry")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--class-noun", default="person", help='"woman", "man", ...: the word the identity token follows')
    parser.add_argument("--category", default="identity",
                        help="prompt category for the manifest: identity, expression, style, scene, ...")
    parser.add_argument("--negative-prompt")
    parser.add_argument("-n", "--num-images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--scale", type=float, default=1.0, help="adapter scale β (0: the plain base model)")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--out", required=True, help="output folder (images/, refs/, manifest.jsonl)")
    parser.add_argument("--system", default="idadapter-v1", help="system name in the manifest")
    parser.add_argument("--governance", help="governance.toml (default: $GOVERNANCE_CONFIG, else ./governance.toml)")
    parser.add_argument("--actor", default="idadapter-sampler", help="who runs this, for the audit log")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                        help="default: float16 on CUDA, float32 on CPU")
    return parser.parse_args(argv)


def _reference_bytes(args: argparse.Namespace, gov: GovernanceContext, actor: Actor) -> tuple[bytes, str]:
    """The reference photo's bytes and a name for messages: from a file, or decrypted from the vault."""
    if args.vault_photo:
        data = gov.vault.read(args.subject, args.vault_photo, purpose=Purpose.AVATAR_GENERATION, actor=actor)
        return data, f"vault photo {args.vault_photo} of {args.subject}"
    path = Path(args.photo)
    try:
        return path.read_bytes(), str(path)
    except OSError as error:
        raise FaceInputError(path, f"cannot read ({error.strerror})") from None


def _reference_identity(args: argparse.Namespace, photo: Image.Image, data: bytes, gov: GovernanceContext,
                        actor: Actor) -> dict | None:
    """What the manifest records of the reference's identity; None when a --photo file is refused.

    A --photo file is checked against the subject's enrolled vault photos and the check is logged (the
    object is the photo's SHA-256); with nothing enrolled it goes on unverified, with a warning.
    """
    if args.vault_photo:
        return {"source": "vault", "verified": True}  # the enrolled photo itself
    check = check_photo_identity(photo, args.subject, gov, actor)
    gov.audit_log.append(actor=actor.name, role=actor.role.value, action="idadapter.identity-check",
                         subject=args.subject, object=hashlib.sha256(data).hexdigest(),
                         outcome="refused" if check.refused else "ok", details=check.as_dict())
    if check.refused:
        found = "no usable face" if check.similarity is None else f"SFace similarity {check.similarity:.4f}"
        print(f"idadapter.sample: refused — {photo.filename} does not match the {len(check.enrolled)} photo(s) "
              f"of subject {args.subject!r} enrolled in the vault: {found}, threshold {check.threshold}. "
              "Nothing was generated; the refusal is in the audit log.", file=sys.stderr)
        return None
    if not check.enrolled:
        print(f"idadapter.sample: warning — the identity of {photo.filename} could not be verified: no photo of "
              f"subject {args.subject!r} is enrolled in the vault. Generating anyway; the audit log and the "
              "manifest record it as unverified.", file=sys.stderr)
    return {"source": "file", **check.as_dict()}


def _copy_reference(data: bytes, image: Image.Image, out: Path, subject: str) -> str:
    """The reference saved under DIR/refs/ (its original bytes), for the manifest; returns its relative path."""
    suffix = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}.get(image.format or "", ".img")
    relative = Path("refs") / f"{subject}_{hashlib.sha256(data).hexdigest()[:12]}{suffix}"
    target = out / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return relative.as_posix()


def _free_image_paths(out: Path, subject: str, count: int) -> list[Path]:
    """count new image paths that do not overwrite an earlier run's images."""
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths, index = [], 0
    while len(paths) < count:
        candidate = folder / f"{subject}_{index:04d}.png"
        if not candidate.exists():
            paths.append(candidate)
        index += 1
    return paths


def run(args: argparse.Namespace) -> int:
    gov = GovernanceContext.load(args.governance)
    actor = Actor(args.actor, "operator")
    try:
        record_id = gov.authorize(args.subject, Purpose.AVATAR_GENERATION, actor=actor)
    except ConsentRefused as refusal:
        print(f"idadapter.sample: refused — no avatar-generation consent for subject {args.subject!r}: "
              f"{refusal.decision.reason}. Nothing was read or generated; the refusal is in the audit log.",
              file=sys.stderr)
        return EXIT_REFUSED
    refusal = gov.registry.get(record_id).usage_limits.category_refusal(args.category)
    gov.audit_log.append(actor=actor.name, role=actor.role.value, action="consent.usage-check", subject=args.subject,
                         object=record_id, outcome="refused" if refusal else "ok",
                         details={"prompt_category": args.category, "reason": refusal or "allowed"})
    if refusal is not None:
        print(f"idadapter.sample: refused — {refusal}. Nothing was read or generated; the refusal is in the audit log.",
              file=sys.stderr)
        return EXIT_REFUSED

    try:
        data, name = _reference_bytes(args, gov, actor)
        original = Image.open(io.BytesIO(data))
        photo = Image.fromarray(load_image(original))  # upright: EXIF orientation applied
    except (FaceInputError, UnidentifiedImageError) as error:
        print(f"idadapter.sample: cannot read the photo: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    photo.filename = name
    identity = _reference_identity(args, photo, data, gov, actor)
    if identity is None:
        return EXIT_REFUSED
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(
        args.dtype or ("float16" if args.device.startswith("cuda") else "float32"))
    pipeline = IDAdapterPipeline.from_pretrained(args.base, args.adapter, image_encoder=args.image_encoder,
                                                 torch_dtype=dtype, device=args.device)
    seeds = [args.seed + i for i in range(args.num_images)]
    images = pipeline(
        photo, args.prompt, class_noun=args.class_noun, adapter_scale=args.scale, negative_prompt=args.negative_prompt,
        num_images_per_prompt=args.num_images, num_inference_steps=args.steps, guidance_scale=args.guidance,
        generator=[torch.Generator(args.device).manual_seed(s) for s in seeds], height=args.height, width=args.width,
    ).images

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reference = _copy_reference(data, original, out, args.subject)
    generator_info = {"name": "idadapter", "version": __version__,
                      "trained_with": [pipeline.adapter.config.recognizer], "adapter_scale": args.scale,
                      "reference_identity": identity}
    with (out / MANIFEST_NAME).open("a") as manifest:
        for image, seed, path in zip(images, seeds, _free_image_paths(out, args.subject, len(images))):
            partial = path.with_suffix(".unsigned.png")
            image.save(partial)
            try:
                gov.sign_output(partial, subject=args.subject, consent_record_id=record_id, generator="idadapter",
                                model_version=__version__, actor=actor, dest=path)
            finally:
                partial.unlink()
            manifest.write(json.dumps({
                "system": args.system, "subject": args.subject, "references": [reference], "prompt": args.prompt,
                "prompt_category": args.category, "seed": seed, "image": path.relative_to(out).as_posix(),
                "generator": generator_info,
            }) + "\n")
            manifest.flush()
    gov.audit_log.checkpoint()
    print(f"{len(images)} signed images of {args.subject} in {out / 'images'}; manifest {out / MANIFEST_NAME}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except ConsentRefused as refusal:  # consent withdrawn while generating: the signer refuses
        print(f"idadapter.sample: refused while signing: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    except (FileNotFoundError, NoFaceInReference, ValueError) as error:
        print(f"idadapter.sample: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
