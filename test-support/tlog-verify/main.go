// Command tlog-verify checks a kihon4 audit transparency log from the outside.
//
// kihon4 publishes its audit trail as a C2SP transparency log: an RFC 6962
// Merkle tree of audit events, served as C2SP tlog-tiles
// (https://c2sp.org/tlog-tiles), with C2SP tlog-checkpoint signed notes
// (https://c2sp.org/tlog-checkpoint, https://c2sp.org/signed-note, Ed25519)
// that witnesses may cosign (https://c2sp.org/tlog-cosignature). kihon4's
// tests must not check that output with kihon4's own code: a bug shared by
// the writer and the checker would go unseen. This program is the
// independent checker. The signature checks and all of the Merkle tree
// math come from Go's reference implementation, golang.org/x/mod/sumdb/note
// and golang.org/x/mod/sumdb/tlog (the code behind sum.golang.org, which
// tlog-tiles generalises), as Debian packages it (golang-golang-x-mod-dev,
// x/mod 0.7.0). Only what x/mod 0.7 does not know is written here: the C2SP
// checkpoint text (x/mod's tlog.ParseTree wants the first line "go.sum
// database tree"), cosignature/v1 signatures (signature type 0x04), the
// C2SP tile paths (x/mod's have a height element), and the command line.
//
// Usage:
//
//	tlog-verify checkpoint  NOTE-FLAGS --note FILE
//	tlog-verify inclusion   NOTE-FLAGS --note FILE --leaf FILE --index I --proof FILE
//	tlog-verify consistency NOTE-FLAGS --old FILE --new FILE --proof FILE
//	tlog-verify tiles       NOTE-FLAGS --note FILE --base URL [--bearer TOKEN]
//	                        [--leaves FILE [--first K]] [--all]
//	tlog-verify signed-by   --signer VKEY [--signer VKEY]... --note FILE
//
// What each checks, after the notes it reads (below):
//
//   - checkpoint: the note alone.
//   - inclusion: that the whole of the --leaf file, byte for byte, is the
//     leaf at --index of the checkpoint's tree, by the proof file
//     {"leaf_index": I, "tree_size": N, "proof": ["<base64 hash>", ...]},
//     whose leaf_index and tree_size must be --index and the checkpoint's.
//   - consistency: that the --old checkpoint's tree is a prefix of the --new
//     one's (same origin), by {"from": n, "to": t, "proof": [...]}, whose
//     from and to must be the two checkpoints' sizes. From the empty tree the
//     proof must be empty.
//   - tiles: that the tiles of the log at URL prefix --base, fetched from
//     BASE/tile/<L>/<N>[.p/<W>] (with "Authorization: Bearer TOKEN" when
//     --bearer is given), hash to the checkpoint's root. With --leaves, that
//     each line of that JSON Lines file (without its "\n", byte for byte) is
//     the leaf --first (default 0), --first+1, ... of the tree, by an
//     inclusion proof made from the tiles. With --all, that every tile of the
//     tree, not only those the root and the proofs need, is the log's; and
//     that the --leaves file, if any, runs to the tree's last leaf.
//   - signed-by: that the signed note in --note (any text, such as a key
//     rotation statement) carries a valid signature by every --signer key,
//     by x/mod's note.Open.
//
// NOTE-FLAGS, which every subcommand takes and applies to every note it reads:
//
//	--vkey VKEY        the log's verifier key (required), <name>+<hex key ID>+<base64(0x01||Ed25519 public key)>
//	--origin ORIGIN    the checkpoint's origin line must be ORIGIN
//	--cosigner VKEY    a cosignature/v1 key, <name>+<hex key ID>+<base64(0x04||Ed25519 public key)>; repeatable
//	--quorum K         at least K of the --cosigner keys must have cosigned (default: all of them)
//
// On success each subcommand prints one line to standard output and exits 0:
//
//	checkpoint:  ok size=<N> hash=<base64 root hash> cosigned=<count>
//	inclusion:   ok size=<N> index=<I>
//	consistency: ok from=<old size> to=<new size>
//	tiles:       ok size=<N> leaves=<count checked>
//	signed-by:   ok signers=<count>
//
// On any failed check it prints "FAIL: <reason>" to standard error and exits
// 1; on bad usage (unknown subcommand or flag, a missing required flag, a
// quorum larger than the cosigners given) it prints the usage and exits 2.
//
// It builds offline in GOPATH mode against Debian's packages, with
// infra/dev/tlog-verify-env.sh.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usageText = `usage:
  tlog-verify checkpoint  NOTE-FLAGS --note FILE
  tlog-verify inclusion   NOTE-FLAGS --note FILE --leaf FILE --index I --proof FILE
  tlog-verify consistency NOTE-FLAGS --old FILE --new FILE --proof FILE
  tlog-verify tiles       NOTE-FLAGS --note FILE --base URL [--bearer TOKEN]
                          [--leaves FILE [--first K]] [--all]
  tlog-verify signed-by   --signer VKEY [--signer VKEY]... --note FILE
NOTE-FLAGS: --vkey VKEY [--origin ORIGIN] [--cosigner VKEY]... [--quorum K]
Prints one "ok ..." line and exits 0, or "FAIL: <reason>" on standard error
and exits 1; exits 2 on bad usage.
`

// usageError is a command line that cannot be run; run exits 2 on it.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...interface{}) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// run is the whole command line: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	var (
		line string
		err  error
	)
	switch cmd, rest := args[0], args[1:]; cmd {
	case "checkpoint":
		line, err = checkpointCmd(rest)
	case "inclusion":
		line, err = inclusionCmd(rest)
	case "consistency":
		line, err = consistencyCmd(rest)
	case "tiles":
		line, err = tilesCmd(rest)
	case "signed-by":
		line, err = signedByCmd(rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return 0
	default:
		err = usagef("unknown subcommand %q", cmd)
	}
	var ue *usageError
	switch {
	case err == nil:
		fmt.Fprintln(stdout, line)
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usageText)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "tlog-verify: %v\n%s", err, usageText)
		return 2
	default:
		fmt.Fprintf(stderr, "FAIL: %v\n", err)
		return 1
	}
}

// ---------------------------------------------------------------------------
// Command lines

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// NoteOptions say which signatures a note must carry and which log it must
// come from. They apply to every note a subcommand reads.
type NoteOptions struct {
	VKey      string   // the log's Ed25519 verifier key
	Origin    string   // the required origin line; "" for any
	Cosigners []string // cosignature/v1 verifier keys
	Quorum    int      // how many of Cosigners must have cosigned; -1 for all
}

// newFlagSet makes the flag set of a subcommand with the NOTE-FLAGS in it.
func newFlagSet(name string, o *NoteOptions) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run reports parse errors, once
	fs.Usage = func() {}
	fs.StringVar(&o.VKey, "vkey", "", "the log's verifier key")
	fs.StringVar(&o.Origin, "origin", "", "required checkpoint origin")
	fs.Var((*stringList)(&o.Cosigners), "cosigner", "a cosignature/v1 verifier key (repeatable)")
	fs.IntVar(&o.Quorum, "quorum", -1, "cosignatures required (default: all cosigners)")
	return fs
}

// parseFlags parses args and checks what every subcommand needs: no
// positional arguments, the required flags, a quorum that can be met.
func parseFlags(fs *flag.FlagSet, args []string, o *NoteOptions, required ...string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range append([]string{"vkey"}, required...) {
		if !set[name] {
			return usagef("%s: --%s is required", fs.Name(), name)
		}
	}
	if o.Quorum < -1 || o.Quorum > len(o.Cosigners) {
		return usagef("%s: --quorum %d with %d --cosigner keys", fs.Name(), o.Quorum, len(o.Cosigners))
	}
	return nil
}

// signedByCmd checks that a signed note is signed by every --signer key.
func signedByCmd(args []string) (string, error) {
	var signers []string
	var notePath string
	fs := flag.NewFlagSet("signed-by", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var((*stringList)(&signers), "signer", "a verifier key that must have signed (repeatable)")
	fs.StringVar(&notePath, "note", "", "the signed note")
	if err := fs.Parse(args); err != nil {
		return "", &usageError{err.Error()}
	}
	if fs.NArg() > 0 || notePath == "" || len(signers) == 0 {
		return "", usagef("signed-by: --note and at least one --signer are required")
	}
	msg, err := os.ReadFile(notePath)
	if err != nil {
		return "", usagef("signed-by: %v", err)
	}
	for _, vkey := range signers {
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return "", usagef("signed-by: --signer %q: %v", vkey, err)
		}
		n, err := note.Open(msg, note.VerifierList(v))
		if err != nil {
			return "", fmt.Errorf("not signed by %s: %v", v.Name(), err)
		}
		if len(n.Sigs) != 1 {
			return "", fmt.Errorf("expected one signature by key %08x, found %d", v.KeyHash(), len(n.Sigs))
		}
	}
	return fmt.Sprintf("ok signers=%d", len(signers)), nil
}

func checkpointCmd(args []string) (string, error) {
	var o NoteOptions
	var notePath string
	fs := newFlagSet("checkpoint", &o)
	fs.StringVar(&notePath, "note", "", "checkpoint file")
	if err := parseFlags(fs, args, &o, "note"); err != nil {
		return "", err
	}
	cp, err := ReadCheckpoint(o, notePath)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("ok size=%d hash=%s cosigned=%d", cp.Size, cp.Hash, cp.Cosigned), nil
}

func inclusionCmd(args []string) (string, error) {
	var o NoteOptions
	var notePath, leafPath, proofPath string
	var index int64
	fs := newFlagSet("inclusion", &o)
	fs.StringVar(&notePath, "note", "", "checkpoint file")
	fs.StringVar(&leafPath, "leaf", "", "file holding exactly the leaf's bytes")
	fs.Int64Var(&index, "index", 0, "the leaf's index")
	fs.StringVar(&proofPath, "proof", "", "inclusion proof JSON file")
	if err := parseFlags(fs, args, &o, "note", "leaf", "index", "proof"); err != nil {
		return "", err
	}
	cp, err := VerifyInclusion(o, notePath, leafPath, index, proofPath)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("ok size=%d index=%d", cp.Size, index), nil
}

func consistencyCmd(args []string) (string, error) {
	var o NoteOptions
	var oldPath, newPath, proofPath string
	fs := newFlagSet("consistency", &o)
	fs.StringVar(&oldPath, "old", "", "the older checkpoint file")
	fs.StringVar(&newPath, "new", "", "the newer checkpoint file")
	fs.StringVar(&proofPath, "proof", "", "consistency proof JSON file")
	if err := parseFlags(fs, args, &o, "old", "new", "proof"); err != nil {
		return "", err
	}
	old, cur, err := VerifyConsistency(o, oldPath, newPath, proofPath)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("ok from=%d to=%d", old.Size, cur.Size), nil
}

func tilesCmd(args []string) (string, error) {
	var t TilesOptions
	fs := newFlagSet("tiles", &t.Note)
	fs.StringVar(&t.NotePath, "note", "", "checkpoint file")
	fs.StringVar(&t.Base, "base", "", "the log's URL prefix (tiles are at BASE/tile/...)")
	fs.StringVar(&t.Bearer, "bearer", "", "send Authorization: Bearer TOKEN")
	fs.StringVar(&t.LeavesPath, "leaves", "", "JSON Lines file of leaves to prove")
	fs.Int64Var(&t.First, "first", 0, "the index of the leaf on the first line of --leaves")
	fs.BoolVar(&t.All, "all", false, "fetch and authenticate every tile; --leaves must run to the end of the tree")
	if err := parseFlags(fs, args, &t.Note, "note", "base"); err != nil {
		return "", err
	}
	if t.First < 0 {
		return "", usagef("tiles: --first must not be negative")
	}
	if t.First != 0 && t.LeavesPath == "" {
		return "", usagef("tiles: --first needs --leaves")
	}
	cp, leaves, err := VerifyTiles(t)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("ok size=%d leaves=%d", cp.Size, leaves), nil
}

// ---------------------------------------------------------------------------
// Checkpoints: signed notes whose text is a C2SP tlog-checkpoint

// A Checkpoint is a verified, parsed checkpoint.
type Checkpoint struct {
	Origin     string
	Size       int64
	Hash       tlog.Hash
	Extensions []string // extension lines, opaque
	Cosigned   int      // how many of the --cosigner keys validly cosigned it
}

// emptyTreeHash is the RFC 6962 hash of the empty tree, SHA-256 of nothing.
// (x/mod's tlog.TreeHash calls the empty tree's hash all zeros instead; a
// checkpoint's root hash is RFC 6962's, so the empty tree is handled here.)
var emptyTreeHash = tlog.Hash(sha256.Sum256(nil))

// ReadCheckpoint reads and verifies the checkpoint note in file path.
func ReadCheckpoint(o NoteOptions, path string) (*Checkpoint, error) {
	msg, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cp, err := OpenCheckpoint(o, msg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cp, nil
}

// OpenCheckpoint verifies a checkpoint note: the log's signature, the
// cosignatures when o asks for them, then the text's C2SP form.
func OpenCheckpoint(o NoteOptions, msg []byte) (*Checkpoint, error) {
	logKey, err := note.NewVerifier(o.VKey)
	if err != nil {
		return nil, fmt.Errorf("--vkey %q: %v", o.VKey, err)
	}
	verifiers := []note.Verifier{logKey}
	var cosigners []note.Verifier
	seen := map[string]bool{}
	for _, vkey := range o.Cosigners {
		if seen[vkey] {
			continue // the same key given twice counts once
		}
		seen[vkey] = true
		v, err := NewCosignatureVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("--cosigner %q: %v", vkey, err)
		}
		cosigners = append(cosigners, v)
		verifiers = append(verifiers, v)
	}

	// note.Open checks every signature line whose key name and key ID are
	// those of a given key (the log's and the cosigners'), fails the whole
	// note if one of them does not verify, and sets aside lines of unknown
	// keys (signed-note: "verifiers MUST ignore signatures from unknown
	// keys"). It succeeds when any one known key signed, so that the log
	// itself signed is checked below.
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			return nil, fmt.Errorf("not signed by the log key %s+%08x", logKey.Name(), logKey.KeyHash())
		}
		return nil, err
	}
	signedBy := func(v note.Verifier) bool {
		for _, s := range n.Sigs {
			if s.Name == v.Name() && s.Hash == v.KeyHash() {
				return true
			}
		}
		return false
	}
	if !signedBy(logKey) {
		return nil, fmt.Errorf("not signed by the log key %s+%08x (only cosigned)", logKey.Name(), logKey.KeyHash())
	}

	cp, err := ParseCheckpointText(n.Text)
	if err != nil {
		return nil, err
	}
	if o.Origin != "" && cp.Origin != o.Origin {
		return nil, fmt.Errorf("origin is %q, want %q", cp.Origin, o.Origin)
	}
	for _, v := range cosigners {
		if signedBy(v) {
			cp.Cosigned++
		}
	}
	quorum := o.Quorum
	if quorum < 0 {
		quorum = len(cosigners)
	}
	if cp.Cosigned < quorum {
		return nil, fmt.Errorf("cosigned by %d of the %d cosigners, want at least %d", cp.Cosigned, len(cosigners), quorum)
	}
	return cp, nil
}

// ParseCheckpointText parses a note text as a C2SP tlog-checkpoint: at
// least three non-empty lines, each ending in a newline: the origin, the
// tree size in decimal with no leading zeros ("0" for the empty tree), the
// root hash in standard padded base64; then optional extension lines, each
// non-empty.
func ParseCheckpointText(text string) (*Checkpoint, error) {
	if !strings.HasSuffix(text, "\n") {
		return nil, errors.New("checkpoint text does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return nil, fmt.Errorf("checkpoint text has %d lines, want at least 3", len(lines))
	}
	for i, l := range lines {
		if l == "" {
			return nil, fmt.Errorf("checkpoint line %d is empty", i+1)
		}
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	// The round trip turns away "+5", "007" and the like.
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return nil, fmt.Errorf("checkpoint tree size %q is not a decimal number without leading zeros", lines[1])
	}
	hash, err := parseHash(lines[2])
	if err != nil {
		return nil, fmt.Errorf("checkpoint root hash: %v", err)
	}
	if size == 0 && hash != emptyTreeHash {
		return nil, fmt.Errorf("checkpoint of the empty tree has root hash %s, want %s (SHA-256 of nothing)", hash, emptyTreeHash)
	}
	return &Checkpoint{Origin: lines[0], Size: size, Hash: hash, Extensions: lines[3:]}, nil
}

// parseHash decodes a 32-byte hash in standard padded base64, in its one
// canonical encoding (Go's decoder alone would let through non-zero padding
// bits, and \r or \n inside).
func parseHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != tlog.HashSize || base64.StdEncoding.EncodeToString(b) != s {
		return h, fmt.Errorf("%q is not a 32-byte hash in standard base64", s)
	}
	copy(h[:], b)
	return h, nil
}

// ---------------------------------------------------------------------------
// Cosignatures (c2sp.org/tlog-cosignature, the Ed25519 cosignature/v1 type)

// algCosignatureV1 is the signed-note signature type of Ed25519
// cosignature/v1 keys. x/mod 0.7's note package knows only 0x01 (Ed25519).
const algCosignatureV1 = 0x04

// cosignatureVerifier is a note.Verifier of cosignature/v1 signatures, so
// that note.Open finds and checks them like any other signature line.
type cosignatureVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

// NewCosignatureVerifier parses a cosignature/v1 verifier key:
// <name>+<hex key ID>+<base64(0x04 || 32-byte Ed25519 public key)>, where the
// key ID must be SHA-256(name || "\n" || 0x04 || public key)[:4].
func NewCosignatureVerifier(vkey string) (note.Verifier, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	hash16, key64, ok2 := strings.Cut(rest, "+")
	hash, err1 := strconv.ParseUint(hash16, 16, 32)
	key, err2 := base64.StdEncoding.DecodeString(key64)
	if !ok1 || !ok2 || len(hash16) != 8 || err1 != nil || err2 != nil || !isValidName(name) || len(key) == 0 {
		return nil, errors.New("malformed verifier key")
	}
	if key[0] != algCosignatureV1 {
		return nil, fmt.Errorf("signature type 0x%02x, want 0x%02x (cosignature/v1)", key[0], algCosignatureV1)
	}
	if len(key) != 1+ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key of %d bytes, want %d", len(key)-1, ed25519.PublicKeySize)
	}
	if uint32(hash) != keyID(name, key) {
		return nil, fmt.Errorf("key ID %s is not that of the name and key (%08x)", hash16, keyID(name, key))
	}
	return &cosignatureVerifier{name: name, hash: uint32(hash), key: ed25519.PublicKey(key[1:])}, nil
}

// keyID is the signed-note key ID: SHA-256(name || "\n" || type || key)[:4].
func keyID(name string, typedKey []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(typedKey)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// isValidName is signed-note's rule for key names: non-empty, valid UTF-8,
// no Unicode spaces, no plus.
func isValidName(name string) bool {
	return name != "" && utf8.ValidString(name) && strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}

func (v *cosignatureVerifier) Name() string    { return v.name }
func (v *cosignatureVerifier) KeyHash() uint32 { return v.hash }

// Verify checks a cosignature over the note text msg. sig is what follows
// the key ID in the signature line: a timestamped_signature, the timestamp
// as a big-endian uint64 (POSIX seconds, at most 2^63-1) then the 64-byte
// Ed25519 signature.
func (v *cosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig[:8])
	if ts > math.MaxInt64 {
		return false
	}
	return ed25519.Verify(v.key, CosignatureMessage(ts, msg), sig[8:])
}

// CosignatureMessage is what a cosignature/v1 signs: the line
// "cosignature/v1", the line "time <timestamp>" (decimal, no leading zeros),
// then the whole note text of the checkpoint, its final newline included
// and its extension lines too (the spec: extension lines, if present, "MUST
// be included in the cosigned message"; early witness code signed only the
// first three lines, which differs only for checkpoints with extensions).
func CosignatureMessage(timestamp uint64, text []byte) []byte {
	m := []byte(fmt.Sprintf("cosignature/v1\ntime %d\n", timestamp))
	return append(m, text...)
}

// ---------------------------------------------------------------------------
// Proofs

// inclusionProof is the JSON of an inclusion proof. Pointers tell a missing
// field from a zero one; other fields are allowed and ignored.
type inclusionProof struct {
	LeafIndex *int64    `json:"leaf_index"`
	TreeSize  *int64    `json:"tree_size"`
	Proof     *[]string `json:"proof"`
}

// consistencyProof is the JSON of a consistency proof.
type consistencyProof struct {
	From  *int64    `json:"from"`
	To    *int64    `json:"to"`
	Proof *[]string `json:"proof"`
}

// readJSON reads file path into v; every field of v must be present.
func readJSON(path string, v interface{}, fields ...string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	var present map[string]json.RawMessage
	_ = json.Unmarshal(b, &present)
	for _, f := range fields {
		if raw, ok := present[f]; !ok || string(raw) == "null" {
			return fmt.Errorf("%s: no %q", path, f)
		}
	}
	return nil
}

func parseHashes(path string, list []string) ([]tlog.Hash, error) {
	hashes := make([]tlog.Hash, len(list))
	for i, s := range list {
		h, err := parseHash(s)
		if err != nil {
			return nil, fmt.Errorf("%s: proof[%d]: %v", path, i, err)
		}
		hashes[i] = h
	}
	return hashes, nil
}

// VerifyInclusion checks that the file leafPath, all of its bytes, is the
// leaf at index of the tree of the checkpoint in notePath, by the RFC 6962
// inclusion proof in proofPath.
func VerifyInclusion(o NoteOptions, notePath, leafPath string, index int64, proofPath string) (*Checkpoint, error) {
	cp, err := ReadCheckpoint(o, notePath)
	if err != nil {
		return nil, err
	}
	leaf, err := os.ReadFile(leafPath)
	if err != nil {
		return nil, err
	}
	var p inclusionProof
	if err := readJSON(proofPath, &p, "leaf_index", "tree_size", "proof"); err != nil {
		return nil, err
	}
	if *p.TreeSize != cp.Size {
		return nil, fmt.Errorf("the proof is for a tree of size %d, the checkpoint's is %d", *p.TreeSize, cp.Size)
	}
	if *p.LeafIndex != index {
		return nil, fmt.Errorf("the proof is for leaf %d, not %d", *p.LeafIndex, index)
	}
	if index < 0 || index >= cp.Size {
		return nil, fmt.Errorf("leaf %d is not in a tree of size %d", index, cp.Size)
	}
	proof, err := parseHashes(proofPath, *p.Proof)
	if err != nil {
		return nil, err
	}
	if err := tlog.CheckRecord(proof, cp.Size, cp.Hash, index, tlog.RecordHash(leaf)); err != nil {
		return nil, fmt.Errorf("leaf %d is not proven in the tree of size %d: %v", index, cp.Size, err)
	}
	return cp, nil
}

// VerifyConsistency checks that the tree of the checkpoint in oldPath is a
// prefix of that in newPath, by the RFC 6962 consistency proof in proofPath.
func VerifyConsistency(o NoteOptions, oldPath, newPath, proofPath string) (old, cur *Checkpoint, err error) {
	if old, err = ReadCheckpoint(o, oldPath); err != nil {
		return nil, nil, err
	}
	if cur, err = ReadCheckpoint(o, newPath); err != nil {
		return nil, nil, err
	}
	if old.Origin != cur.Origin {
		return nil, nil, fmt.Errorf("the checkpoints are of two logs: origins %q and %q", old.Origin, cur.Origin)
	}
	var p consistencyProof
	if err := readJSON(proofPath, &p, "from", "to", "proof"); err != nil {
		return nil, nil, err
	}
	if *p.From != old.Size || *p.To != cur.Size {
		return nil, nil, fmt.Errorf("the proof is from %d to %d, the checkpoints are of sizes %d and %d", *p.From, *p.To, old.Size, cur.Size)
	}
	if old.Size > cur.Size {
		return nil, nil, fmt.Errorf("the old checkpoint (size %d) is larger than the new one (size %d)", old.Size, cur.Size)
	}
	proof, err := parseHashes(proofPath, *p.Proof)
	if err != nil {
		return nil, nil, err
	}
	if old.Size == 0 {
		// Every tree extends the empty one (whose hash ParseCheckpointText
		// checked); RFC 6962 defines no proof for it, and tlog.CheckTree
		// refuses it, so the proof must be empty.
		if len(proof) != 0 {
			return nil, nil, fmt.Errorf("a consistency proof from the empty tree must be empty, this one has %d hashes", len(proof))
		}
		return old, cur, nil
	}
	if err := tlog.CheckTree(proof, cur.Size, cur.Hash, old.Size, old.Hash); err != nil {
		return nil, nil, fmt.Errorf("the tree of size %d is not proven a prefix of that of size %d: %v", old.Size, cur.Size, err)
	}
	return old, cur, nil
}

// ---------------------------------------------------------------------------
// Tiles (c2sp.org/tlog-tiles)

// tileHeight is tlog-tiles' tile height: a full tile holds 2^8 = 256 hashes.
const tileHeight = 8

// TilesOptions are the tiles subcommand's.
type TilesOptions struct {
	Note       NoteOptions
	NotePath   string
	Base       string // the log's URL prefix
	Bearer     string // "" for no Authorization header
	LeavesPath string // "" for no leaves
	First      int64  // the index of the leaf on the first line of LeavesPath
	All        bool
}

// TilePath is the C2SP path of a tile of height 8: tile/<L>/<N>[.p/<W>],
// <N> in 3-digit groups, each but the last with an "x" prefix. That is x/mod's
// Tile.Path without its height element (tile/8/...).
func TilePath(t tlog.Tile) string {
	if t.H != tileHeight || t.L < 0 {
		panic(fmt.Sprintf("TilePath(%+v): not a hash tile of height %d", t, tileHeight))
	}
	return "tile/" + strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", tileHeight))
}

// TreeTiles lists every tile of a tree of size n: at each level the full
// tiles, then the partial one when there is one (floor(n/256^L) mod 256
// hashes wide).
func TreeTiles(n int64) []tlog.Tile {
	var tiles []tlog.Tile
	for level := 0; n>>(tileHeight*uint(level)) > 0; level++ {
		width := n >> (tileHeight * uint(level)) // hashes at this level
		for i := int64(0); i < width>>tileHeight; i++ {
			tiles = append(tiles, tlog.Tile{H: tileHeight, L: level, N: i, W: 1 << tileHeight})
		}
		if w := int(width & (1<<tileHeight - 1)); w > 0 {
			tiles = append(tiles, tlog.Tile{H: tileHeight, L: level, N: width >> tileHeight, W: w})
		}
	}
	return tiles
}

// httpTileReader is a tlog.TileReader that fetches tiles from a tlog-tiles
// log over HTTP. What it returns is not trusted: tlog.TileHashReader checks
// every tile it is given against the signed tree hash (partial and root-path
// tiles) or against the already-checked tile above it (full tiles), each
// time, so keeping fetched tiles in memory only saves requests.
type httpTileReader struct {
	base     string
	bearer   string
	client   *http.Client
	cache    map[tlog.Tile][]byte
	requests int
}

func (r *httpTileReader) Height() int { return tileHeight }

func (r *httpTileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	for i, t := range tiles {
		d, err := r.readTile(t)
		if err != nil {
			return nil, err
		}
		data[i] = d
	}
	return data, nil
}

// SaveTiles is told which tiles were found good; there is nothing to save.
func (r *httpTileReader) SaveTiles([]tlog.Tile, [][]byte) {}

func (r *httpTileReader) readTile(t tlog.Tile) ([]byte, error) {
	if d, ok := r.cache[t]; ok {
		return d, nil
	}
	want := t.W * tlog.HashSize
	d, status, err := r.get(TilePath(t), want)
	if status == http.StatusNotFound && t.W < 1<<tileHeight {
		// tlog-tiles lets a log delete a partial tile once the full tile
		// is there, and lets clients fetch the full tile instead: the
		// partial tile's hashes are its first W.
		full := tlog.Tile{H: t.H, L: t.L, N: t.N, W: 1 << tileHeight}
		fd, _, ferr := r.get(TilePath(full), 1<<tileHeight*tlog.HashSize)
		if ferr != nil {
			return nil, fmt.Errorf("%v; and the full tile: %v", err, ferr)
		}
		d, err = fd[:want], nil
	}
	if err != nil {
		return nil, err
	}
	r.cache[t] = d
	return d, nil
}

// get fetches base/path, which must answer 200 with exactly size bytes.
func (r *httpTileReader) get(path string, size int) ([]byte, int, error) {
	u := r.base + "/" + path
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	if r.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	r.requests++
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(size)+1))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("GET %s: %v", u, err)
	}
	if len(b) > size {
		return nil, resp.StatusCode, fmt.Errorf("GET %s: more than %d bytes", u, size)
	}
	if len(b) < size {
		return nil, resp.StatusCode, fmt.Errorf("GET %s: %d bytes, want %d", u, len(b), size)
	}
	return b, resp.StatusCode, nil
}

// splitLeaves splits a JSON Lines file: each line, without its "\n", is a
// leaf, byte for byte (no "\r" is taken off). A last line without a final
// newline is a leaf too.
func splitLeaves(b []byte) [][]byte {
	if len(b) == 0 {
		return nil
	}
	lines := bytes.Split(b, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1] // the final newline ends a line, it starts none
	}
	return lines
}

// VerifyTiles checks a log's tiles against a checkpoint: the tree hash
// computed from the tiles must be the signed one. With All, every tile of the
// tree is fetched and proven, not only those the tree hash needs (all of them
// are held in memory: this is for test-sized logs). With
// LeavesPath, each line of it is proven to be the leaf First, First+1, ... of
// the tree by an inclusion proof made from the tiles; with All as well, its
// lines must run to the tree's last leaf.
func VerifyTiles(o TilesOptions) (cp *Checkpoint, leaves int, err error) {
	if cp, err = ReadCheckpoint(o.Note, o.NotePath); err != nil {
		return nil, 0, err
	}
	base, err := url.Parse(o.Base)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, 0, fmt.Errorf("--base %q is not an http or https URL", o.Base)
	}
	var lines [][]byte
	if o.LeavesPath != "" {
		b, err := os.ReadFile(o.LeavesPath)
		if err != nil {
			return nil, 0, err
		}
		lines = splitLeaves(b)
		if end := o.First + int64(len(lines)); end > cp.Size {
			return nil, 0, fmt.Errorf("%s holds leaves %d to %d, the tree has only %d", o.LeavesPath, o.First, end-1, cp.Size)
		} else if o.All && end != cp.Size {
			return nil, 0, fmt.Errorf("%s holds leaves %d to %d, the tree's last is %d (--all)", o.LeavesPath, o.First, end-1, cp.Size-1)
		}
	}
	if cp.Size == 0 {
		// No tiles to fetch: the empty tree's hash was checked with the text.
		return cp, 0, nil
	}

	tr := &httpTileReader{
		base:   strings.TrimSuffix(o.Base, "/"),
		bearer: o.Bearer,
		client: &http.Client{Timeout: time.Minute},
		cache:  map[tlog.Tile][]byte{},
	}
	hr := tlog.TileHashReader(tlog.Tree{N: cp.Size, Hash: cp.Hash}, tr)
	th, err := tlog.TreeHash(cp.Size, hr)
	if err != nil {
		return nil, 0, fmt.Errorf("tree hash from the tiles: %v", err)
	}
	if th != cp.Hash {
		return nil, 0, fmt.Errorf("the tiles hash to %s, the checkpoint says %s", th, cp.Hash)
	}
	if o.All {
		if err := verifyAllTiles(tr, cp.Size, cp.Hash); err != nil {
			return nil, 0, err
		}
	}
	for j, line := range lines {
		i := o.First + int64(j)
		proof, err := tlog.ProveRecord(cp.Size, i, hr)
		if err != nil {
			return nil, 0, fmt.Errorf("proof of leaf %d from the tiles: %v", i, err)
		}
		if err := tlog.CheckRecord(proof, cp.Size, cp.Hash, i, tlog.RecordHash(line)); err != nil {
			return nil, 0, fmt.Errorf("line %d of %s is not leaf %d of the tree: %v", j+1, o.LeavesPath, i, err)
		}
	}
	return cp, len(lines), nil
}

// verifyAllTiles fetches every tile of the tree of size n and proves each one
// against the root hash, top-down: the tree hash computed from the tiles must
// be root, which proves the partial tiles (every hash in a partial tile goes
// into it), and each full tile must hash to its entry in the tile above.
//
// This does not go through tlog.TileHashReader, which cannot be relied on to
// prove every tile it returns: after the tiles on the root's path it checks
// each further tile against its parent in a loop that starts at the count of
// the root's subtree hashes, not at the count of the tiles they came from, so
// when two of those hashes share a tile (most tree sizes) the first further
// tiles are returned unchecked. (x/mod 0.7.0's tile.go, the same in x/mod's
// master; ProveRecord and CheckRecord still catch any hash that a proof uses,
// since CheckRecord checks against the signed root itself.)
func verifyAllTiles(tr *httpTileReader, n int64, root tlog.Hash) error {
	tiles := TreeTiles(n)
	data, err := tr.ReadTiles(tiles)
	if err != nil {
		return err
	}
	type coord struct {
		level int
		n     int64
	}
	byCoord := map[coord]int{}
	for i, t := range tiles {
		byCoord[coord{t.L, t.N}] = i
	}
	// raw reads hashes out of the fetched tiles, as yet unproven.
	raw := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		hashes := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			least := tlog.TileForIndex(tileHeight, x)
			j, ok := byCoord[coord{least.L, least.N}]
			if !ok {
				return nil, fmt.Errorf("stored hash %d is in no tile of the tree", x)
			}
			h, err := tlog.HashFromTile(tiles[j], data[j], x)
			if err != nil {
				return nil, err
			}
			hashes[i] = h
		}
		return hashes, nil
	})
	th, err := tlog.TreeHash(n, raw)
	if err != nil {
		return err
	}
	if th != root {
		return fmt.Errorf("the tree's partial tiles hash to %s, the checkpoint says %s", th, root)
	}
	for i, t := range tiles {
		if t.W != 1<<tileHeight {
			continue
		}
		// The hash of a full tile is the node above its two halves: x/mod
		// keeps tree levels 8L to 8L+7 in a tile of level L, and the
		// level 8L+8 hash as an entry of the tile above.
		top := tileHeight*t.L + tileHeight - 1
		left, err1 := tlog.HashFromTile(t, data[i], tlog.StoredHashIndex(top, 2*t.N))
		right, err2 := tlog.HashFromTile(t, data[i], tlog.StoredHashIndex(top, 2*t.N+1))
		parent, err3 := raw.ReadHashes([]int64{tlog.StoredHashIndex(top+1, t.N)})
		if err := firstError(err1, err2, err3); err != nil {
			return fmt.Errorf("%s: %v", TilePath(t), err)
		}
		if tlog.NodeHash(left, right) != parent[0] {
			return fmt.Errorf("%s: downloaded inconsistent tile: it does not hash to its entry in the tile above", TilePath(t))
		}
	}
	return nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
