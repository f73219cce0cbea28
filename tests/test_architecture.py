"""The import rules of the design, checked on the source (lazy imports inside functions count too)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "governance": {"eval", "idadapter", "torch", "torchvision", "diffusers", "transformers", "accelerate", "onnxruntime", "cv2", "dlib"},
    "eval": {"idadapter"},
}
# The release watermark (EU AI Act Art. 50's second marking layer) is image signal processing: OpenCV's
# DCT and colour transforms, and onnxruntime for the optional RivaGAN model. Only that module may use them.
ALLOWED = {"governance/watermark.py": {"cv2", "onnxruntime"}}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_import_rules(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    offences = {}
    for path in files:
        name = str(path.relative_to(ROOT))
        forbidden = imported_roots(path) & FORBIDDEN[package] - ALLOWED.get(name, set())
        if forbidden:
            offences[name] = sorted(forbidden)
    assert not offences, f"{package}/ imports what the design forbids: {offences}"


def test_idadapter_uses_only_the_face_core_and_register_from_eval():
    allowed = {"eval.faces", "eval.models"}
    offences = {}
    for path in sorted((ROOT / "idadapter").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            )
            bad = [n for n in names if n.split(".")[0] == "eval" and not any(n == a or n.startswith(a + ".") for a in allowed)]
            if bad:
                offences[str(path.relative_to(ROOT))] = bad
    assert not offences, f"idadapter/ may use only {sorted(allowed)} from eval: {offences}"
