// Command notecheck opens an audit-log checkpoint with Go's golang.org/x/mod/sumdb/note and
// requires a valid signature from the log's key and, for each -witness, a valid C2SP
// tlog-cosignature/v1 from that witness. It prints the verified signers and exits 0, or
// prints the reason and exits 1.
//
//	notecheck -log VKEY [-witness VKEY]... CHECKPOINT_FILE
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

const cosignatureAlgorithm = 0x04

// cosignatureVerifier checks C2SP tlog-cosignature/v1 signatures: 8-byte big-endian timestamp
// then an Ed25519 signature over "cosignature/v1\ntime <t>\n" + the checkpoint body.
type cosignatureVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosignatureVerifier) Name() string    { return v.name }
func (v *cosignatureVerifier) KeyHash() uint32 { return v.hash }
func (v *cosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	timestamp := binary.BigEndian.Uint64(sig[:8])
	signed := append([]byte("cosignature/v1\ntime "+strconv.FormatUint(timestamp, 10)+"\n"), msg...)
	return ed25519.Verify(v.key, signed, sig[8:])
}

func newCosignatureVerifier(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("witness vkey is not name+hash+key")
	}
	name, hashHex, encoded := parts[0], parts[1], parts[2]
	hash, err := strconv.ParseUint(hashHex, 16, 32)
	key, err2 := base64.StdEncoding.DecodeString(encoded)
	if err != nil || err2 != nil || len(key) != 1+ed25519.PublicKeySize || key[0] != cosignatureAlgorithm {
		return nil, errors.New("witness vkey is malformed or not a cosignature/v1 key")
	}
	sum := sha256.Sum256(append([]byte(name+"\n"), key...))
	if uint32(hash) != binary.BigEndian.Uint32(sum[:4]) {
		return nil, errors.New("witness vkey hash does not match its name and key")
	}
	return &cosignatureVerifier{name: name, hash: uint32(hash), key: ed25519.PublicKey(key[1:])}, nil
}

type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

func main() {
	logKey := flag.String("log", "", "the log's vkey (Ed25519)")
	var witnesses names
	flag.Var(&witnesses, "witness", "a witness vkey (cosignature/v1); repeatable")
	flag.Parse()
	if err := run(*logKey, witnesses, flag.Args()); err != nil {
		fmt.Println("notecheck:", err)
		os.Exit(1)
	}
}

func run(logKey string, witnesses []string, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: notecheck -log VKEY [-witness VKEY]... CHECKPOINT_FILE")
	}
	msg, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	logVerifier, err := note.NewVerifier(logKey)
	if err != nil {
		return fmt.Errorf("log vkey: %v", err)
	}
	verifiers := []note.Verifier{logVerifier}
	for _, vkey := range witnesses {
		v, err := newCosignatureVerifier(vkey)
		if err != nil {
			return err
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		return err
	}
	verified := map[string]bool{}
	for _, sig := range n.Sigs {
		verified[sig.Name] = true
	}
	for _, v := range verifiers {
		if !verified[v.Name()] {
			return fmt.Errorf("no valid signature by %s", v.Name())
		}
	}
	lines := bytes.SplitN([]byte(n.Text), []byte("\n"), 3)
	fmt.Printf("ok: %s size %s signed by %s\n", lines[0], lines[1], strings.Join(sortedNames(n.Sigs), ", "))
	return nil
}

func sortedNames(sigs []note.Signature) []string {
	out := make([]string, 0, len(sigs))
	for _, sig := range sigs {
		out = append(out, sig.Name)
	}
	return out
}
