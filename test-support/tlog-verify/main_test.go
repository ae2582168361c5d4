// Tests of tlog-verify against logs made here with x/mod's own tlog and note
// packages: a tree built with tlog.StoredHashes, checkpoints signed with
// note.Sign, proofs from tlog.ProveRecord and tlog.ProveTree, and tiles
// served by an httptest.Server at their C2SP paths. Each check is also
// shown to fail on what it exists to catch.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const testOrigin = "kihon4.test/audit"

// testLog is a log of leaves kept in memory, with every stored hash.
type testLog struct {
	leaves [][]byte
	hashes []tlog.Hash
}

func (l *testLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(l.hashes)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = l.hashes[x]
	}
	return out, nil
}

func (l *testLog) add(t *testing.T, leaf []byte) {
	t.Helper()
	h, err := tlog.StoredHashes(int64(len(l.leaves)), leaf, l)
	if err != nil {
		t.Fatal(err)
	}
	l.leaves = append(l.leaves, leaf)
	l.hashes = append(l.hashes, h...)
}

// testLeaf is leaf i: a line of JSON, as kihon4's audit events are.
func testLeaf(i int) []byte {
	return []byte(fmt.Sprintf(`{"seq":%d,"type":"customer.updated","actor":"cli:test"}`, i))
}

func newTestLog(t *testing.T, n int, leaf func(int) []byte) *testLog {
	t.Helper()
	l := &testLog{}
	for i := 0; i < n; i++ {
		l.add(t, leaf(i))
	}
	return l
}

func (l *testLog) treeHash(t *testing.T, n int64) tlog.Hash {
	t.Helper()
	if n == 0 {
		return emptyTreeHash
	}
	h, err := tlog.TreeHash(n, l)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// tiles are the tiles of the tree of size n, by C2SP path.
func (l *testLog) tiles(t *testing.T, n int64) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, tile := range TreeTiles(n) {
		d, err := tlog.ReadTileData(tile, l)
		if err != nil {
			t.Fatal(err)
		}
		m[TilePath(tile)] = d
	}
	return m
}

// jsonl is leaves [from, to) of l, one a line.
func (l *testLog) jsonl(from, to int) []byte {
	var b bytes.Buffer
	for _, leaf := range l.leaves[from:to] {
		b.Write(leaf)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

type testKey struct {
	skey, vkey string
	signer     note.Signer
}

func newTestKey(t *testing.T, name string) testKey {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{skey, vkey, s}
}

func checkpointText(origin string, n int64, h tlog.Hash, ext ...string) string {
	text := fmt.Sprintf("%s\n%d\n%s\n", origin, n, base64.StdEncoding.EncodeToString(h[:]))
	for _, e := range ext {
		text += e + "\n"
	}
	return text
}

func signNote(t *testing.T, text string, keys ...testKey) []byte {
	t.Helper()
	var signers []note.Signer
	for _, k := range keys {
		signers = append(signers, k.signer)
	}
	msg, err := note.Sign(&note.Note{Text: text}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func (l *testLog) checkpoint(t *testing.T, k testKey, n int64) []byte {
	t.Helper()
	return signNote(t, checkpointText(testOrigin, n, l.treeHash(t, n)), k)
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeJSON(t *testing.T, name string, v interface{}) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, name, b)
}

func b64s(hashes []tlog.Hash) []string {
	out := []string{}
	for _, h := range hashes {
		out = append(out, base64.StdEncoding.EncodeToString(h[:]))
	}
	return out
}

// runOK runs the command line, which must succeed, and returns its line.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("tlog-verify %s: exit %d, stderr %q", strings.Join(args, " "), code, errb.String())
	}
	if errb.Len() != 0 || !strings.HasPrefix(out.String(), "ok ") || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("tlog-verify %s: stdout %q, stderr %q", strings.Join(args, " "), out.String(), errb.String())
	}
	return strings.TrimSuffix(out.String(), "\n")
}

// runFail runs the command line, which must fail its check (exit 1) with
// a reason containing want.
func runFail(t *testing.T, want string, args ...string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	if code != 1 || out.Len() != 0 || !strings.HasPrefix(errb.String(), "FAIL: ") || !strings.Contains(errb.String(), want) {
		t.Fatalf("tlog-verify %s: exit %d, stdout %q, stderr %q; want exit 1 and FAIL: ...%s...",
			strings.Join(args, " "), code, out.String(), errb.String(), want)
	}
}

func runUsage(t *testing.T, args ...string) {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 2 || out.Len() != 0 {
		t.Fatalf("tlog-verify %s: exit %d, stdout %q, stderr %q; want exit 2", strings.Join(args, " "), code, out.String(), errb.String())
	}
}

// ---------------------------------------------------------------------------

func TestTilePath(t *testing.T) {
	for _, c := range []struct {
		tile tlog.Tile
		path string
	}{
		{tlog.Tile{H: 8, L: 0, N: 0, W: 256}, "tile/0/000"},
		{tlog.Tile{H: 8, L: 0, N: 1, W: 5}, "tile/0/001.p/5"},
		{tlog.Tile{H: 8, L: 0, N: 999, W: 256}, "tile/0/999"},
		{tlog.Tile{H: 8, L: 0, N: 1000, W: 256}, "tile/0/x001/000"},
		{tlog.Tile{H: 8, L: 3, N: 1234067, W: 256}, "tile/3/x001/x234/067"},
		{tlog.Tile{H: 8, L: 1, N: 1234067, W: 17}, "tile/1/x001/x234/067.p/17"},
	} {
		if got := TilePath(c.tile); got != c.path {
			t.Errorf("TilePath(%+v) = %q, want %q", c.tile, got, c.path)
		}
	}
}

func TestTreeTiles(t *testing.T) {
	// The examples of c2sp.org/tlog-tiles: 70,000 leaves are 273 full
	// level 0 tiles, a partial one of width 112, one full level 1 tile, a
	// partial one of width 17 and a partial level 2 tile of width 1; 256
	// leaves are a full level 0 tile and a partial level 1 tile of width 1.
	want70000 := []string{}
	for i := 0; i < 273; i++ {
		want70000 = append(want70000, fmt.Sprintf("tile/0/%03d", i))
	}
	want70000 = append(want70000, "tile/0/273.p/112", "tile/1/000", "tile/1/001.p/17", "tile/2/000.p/1")
	for _, c := range []struct {
		n    int64
		want []string
	}{
		{0, nil},
		{1, []string{"tile/0/000.p/1"}},
		{255, []string{"tile/0/000.p/255"}},
		{256, []string{"tile/0/000", "tile/1/000.p/1"}},
		{70000, want70000},
	} {
		var got []string
		for _, tile := range TreeTiles(c.n) {
			got = append(got, TilePath(tile))
		}
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("TreeTiles(%d) = %v, want %v", c.n, got, c.want)
		}
	}
}

func TestParseCheckpointText(t *testing.T) {
	h := tlog.RecordHash([]byte("x"))
	hb := base64.StdEncoding.EncodeToString(h[:])
	cp, err := ParseCheckpointText("o.example/log\n12\n" + hb + "\next one\next two\n")
	if err != nil || cp.Origin != "o.example/log" || cp.Size != 12 || cp.Hash != h || len(cp.Extensions) != 2 {
		t.Fatalf("ParseCheckpointText: %+v, %v", cp, err)
	}
	if _, err := ParseCheckpointText("o\n0\n" + base64.StdEncoding.EncodeToString(emptyTreeHash[:]) + "\n"); err != nil {
		t.Errorf("the empty tree: %v", err)
	}
	// A hash whose last base64 character carries non-zero padding bits.
	nonCanonical := hb[:42] + string(hb[42]+1) + "="
	for _, bad := range []string{
		"o\n12\n" + hb,             // no final newline
		"o\n12\n",                  // two lines
		"\n12\n" + hb + "\n",       // empty origin
		"o\n012\n" + hb + "\n",     // leading zero
		"o\n+12\n" + hb + "\n",     // sign
		"o\n-1\n" + hb + "\n",      // negative
		"o\n 12\n" + hb + "\n",     // space
		"o\n1e3\n" + hb + "\n",     // not decimal
		"o\n12\n" + hb[:43] + "\n", // unpadded
		"o\n12\n" + nonCanonical + "\n",
		"o\n12\n" + base64.StdEncoding.EncodeToString(h[:31]) + "\n", // 31 bytes
		"o\n12\n" + hb + "\n\n",       // empty extension line
		"o\n12\n" + hb + "\nx\n\ny\n", // empty extension line
		"o\n0\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n", // x/mod's zero hash for the empty tree
	} {
		if cp, err := ParseCheckpointText(bad); err == nil {
			t.Errorf("ParseCheckpointText(%q) = %+v, want an error", bad, cp)
		}
	}
}

func TestCheckpoint(t *testing.T) {
	key := newTestKey(t, testOrigin)
	l := newTestLog(t, 20, testLeaf)
	h := l.treeHash(t, 20)
	cp := writeFile(t, "checkpoint", l.checkpoint(t, key, 20))

	want := fmt.Sprintf("ok size=20 hash=%s cosigned=0", base64.StdEncoding.EncodeToString(h[:]))
	if got := runOK(t, "checkpoint", "--vkey", key.vkey, "--note", cp); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	runOK(t, "checkpoint", "--vkey", key.vkey, "--note", cp, "--origin", testOrigin)
	runOK(t, "checkpoint", "-vkey="+key.vkey, "-note="+cp) // Go's flag package takes either form
	runFail(t, "origin", "checkpoint", "--vkey", key.vkey, "--note", cp, "--origin", "kihon4.test/other")

	// A key of the same name that did not sign it.
	other := newTestKey(t, testOrigin)
	runFail(t, "not signed by the log key", "checkpoint", "--vkey", other.vkey, "--note", cp)
	// A note signed by both still passes for either.
	both := writeFile(t, "both", signNote(t, checkpointText(testOrigin, 20, h), key, other))
	runOK(t, "checkpoint", "--vkey", other.vkey, "--note", both)

	// A text changed under the signature: the known key's signature fails.
	signed := l.checkpoint(t, key, 20)
	runFail(t, "invalid signature", "checkpoint", "--vkey", key.vkey,
		"--note", writeFile(t, "tampered", bytes.Replace(signed, []byte("\n20\n"), []byte("\n21\n"), 1)))
	// Signed, but not a checkpoint.
	runFail(t, "tree size", "checkpoint", "--vkey", key.vkey,
		"--note", writeFile(t, "notcp", signNote(t, "hello\nworld\n"+base64.StdEncoding.EncodeToString(h[:])+"\n", key)))
	runFail(t, "malformed", "checkpoint", "--vkey", key.vkey, "--note", writeFile(t, "garbage", []byte("not a note")))
	runFail(t, "--vkey", "checkpoint", "--vkey", "nonsense", "--note", cp)
	runFail(t, "no such file", "checkpoint", "--vkey", key.vkey, "--note", filepath.Join(t.TempDir(), "missing"))
}

func TestSignedBy(t *testing.T) {
	retired := newTestKey(t, testOrigin)
	successor := newTestKey(t, testOrigin)
	text := "kihon4 audit log key rotation\norigin " + testOrigin + "\n"
	both := writeFile(t, "both", signNote(t, text, retired, successor))
	if got := runOK(t, "signed-by", "--signer", retired.vkey, "--signer", successor.vkey, "--note", both); got != "ok signers=2" {
		t.Errorf("got %q", got)
	}
	runOK(t, "signed-by", "--signer", successor.vkey, "--note", both)
	// Signed by one of the two: the other's signature is missing.
	one := writeFile(t, "one", signNote(t, text, successor))
	runFail(t, "not signed by", "signed-by", "--signer", retired.vkey, "--signer", successor.vkey, "--note", one)
	// A stranger of the same name, and a changed text.
	stranger := newTestKey(t, testOrigin)
	runFail(t, "not signed by", "signed-by", "--signer", stranger.vkey, "--note", both)
	signed := signNote(t, text, retired, successor)
	changed := writeFile(t, "changed", bytes.Replace(signed, []byte("rotation"), []byte("rotatiom"), 1))
	runFail(t, "not signed by", "signed-by", "--signer", retired.vkey, "--note", changed)
	runUsage(t, "signed-by", "--note", both)
	runUsage(t, "signed-by", "--signer", retired.vkey)
	runUsage(t, "signed-by", "--signer", "nonsense", "--note", both)
}

func TestUsage(t *testing.T) {
	key := newTestKey(t, testOrigin)
	cv, _ := newCosigner(t, "witness.test/w1")
	runUsage(t)
	runUsage(t, "frobnicate")
	runUsage(t, "checkpoint", "--note", "x")      // no --vkey
	runUsage(t, "checkpoint", "--vkey", key.vkey) // no --note
	runUsage(t, "checkpoint", "--vkey", key.vkey, "--note", "x", "extra")
	runUsage(t, "checkpoint", "--vkey", key.vkey, "--note", "x", "--bogus")
	runUsage(t, "checkpoint", "--vkey", key.vkey, "--note", "x", "--cosigner", cv, "--quorum", "2")
	runUsage(t, "inclusion", "--vkey", key.vkey, "--note", "x", "--leaf", "y", "--proof", "z") // no --index
	runUsage(t, "inclusion", "--vkey", key.vkey, "--note", "x", "--leaf", "y", "--proof", "z", "--index", "one")
	runUsage(t, "consistency", "--vkey", key.vkey, "--old", "x", "--proof", "z")
	runUsage(t, "tiles", "--vkey", key.vkey, "--note", "x")
	runUsage(t, "tiles", "--vkey", key.vkey, "--note", "x", "--base", "http://127.0.0.1:1", "--first", "3")
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "usage:") {
		t.Errorf("--help: exit %d, stdout %q", code, out.String())
	}
}

func TestInclusion(t *testing.T) {
	key := newTestKey(t, testOrigin)
	const n = 300
	l := newTestLog(t, n, testLeaf)
	cp := writeFile(t, "checkpoint", l.checkpoint(t, key, n))
	prove := func(i int64) []tlog.Hash {
		p, err := tlog.ProveRecord(n, i, l)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	proofFile := func(index, size int64, p []tlog.Hash) string {
		return writeJSON(t, "proof.json", map[string]interface{}{"leaf_index": index, "tree_size": size, "proof": b64s(p)})
	}
	args := func(leaf []byte, index int64, proof string) []string {
		return []string{"inclusion", "--vkey", key.vkey, "--note", cp, "--origin", testOrigin,
			"--leaf", writeFile(t, "leaf", leaf), "--index", fmt.Sprint(index), "--proof", proof}
	}
	for _, i := range []int64{0, 1, 2, 127, 255, 256, 257, 298, 299} {
		if got, want := runOK(t, args(l.leaves[i], i, proofFile(i, n, prove(i)))...), fmt.Sprintf("ok size=%d index=%d", n, i); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// A tree of one leaf: the proof is empty.
	one := newTestLog(t, 1, testLeaf)
	cp1 := writeFile(t, "checkpoint1", one.checkpoint(t, key, 1))
	runOK(t, "inclusion", "--vkey", key.vkey, "--note", cp1, "--leaf", writeFile(t, "leaf", one.leaves[0]),
		"--index", "0", "--proof", proofFile(0, 1, nil))

	const i = 42
	proof := proofFile(i, n, prove(i))
	flipped := append([]byte(nil), l.leaves[i]...)
	flipped[5] ^= 1
	runFail(t, "not proven", args(flipped, i, proof)...)
	// The whole file is the leaf: a trailing newline makes it another leaf.
	runFail(t, "not proven", args(append(append([]byte(nil), l.leaves[i]...), '\n'), i, proof)...)
	// Another leaf with this leaf's proof.
	runFail(t, "not proven", args(l.leaves[i+1], i+1, proofFile(i+1, n, prove(i)))...)
	// A proof altered by one hash.
	bad := prove(i)
	bad[3][0] ^= 0x80
	runFail(t, "not proven", args(l.leaves[i], i, proofFile(i, n, bad))...)
	runFail(t, "not proven", args(l.leaves[i], i, proofFile(i, n, prove(i)[1:]))...)
	// The proof and the command line or the checkpoint disagree.
	runFail(t, "not 43", args(l.leaves[i], i+1, proof)...)
	runFail(t, "tree of size 299", args(l.leaves[i], i, proofFile(i, n-1, prove(i)))...)
	runFail(t, "not in a tree", args(l.leaves[i], n, proofFile(n, n, prove(i)))...)
	runFail(t, `no "proof"`, args(l.leaves[i], i, writeJSON(t, "p.json", map[string]int64{"leaf_index": i, "tree_size": n}))...)
	runFail(t, "not a 32-byte hash", args(l.leaves[i], i, writeJSON(t, "p.json", map[string]interface{}{"leaf_index": i, "tree_size": n, "proof": []string{"AAAA"}}))...)
	// A checkpoint by another key.
	other := newTestKey(t, testOrigin)
	runFail(t, "not signed by the log key", "inclusion", "--vkey", other.vkey, "--note", cp,
		"--leaf", writeFile(t, "leaf", l.leaves[i]), "--index", fmt.Sprint(i), "--proof", proof)
}

func TestConsistency(t *testing.T) {
	key := newTestKey(t, testOrigin)
	const n = 600
	l := newTestLog(t, n, testLeaf)
	cpAt := func(size int64) string { return writeFile(t, "checkpoint", l.checkpoint(t, key, size)) }
	proofFile := func(from, to int64, p []tlog.Hash) string {
		return writeJSON(t, "proof.json", map[string]interface{}{"from": from, "to": to, "proof": b64s(p)})
	}
	prove := func(from, to int64) []tlog.Hash {
		p, err := tlog.ProveTree(to, from, l)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range [][2]int64{{1, 1}, {1, 2}, {3, 7}, {10, 20}, {255, 256}, {256, 257}, {256, 600}, {300, 600}, {599, 600}, {600, 600}} {
		got := runOK(t, "consistency", "--vkey", key.vkey, "--origin", testOrigin,
			"--old", cpAt(c[0]), "--new", cpAt(c[1]), "--proof", proofFile(c[0], c[1], prove(c[0], c[1])))
		if want := fmt.Sprintf("ok from=%d to=%d", c[0], c[1]); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// From the empty tree: an empty proof.
	runOK(t, "consistency", "--vkey", key.vkey, "--old", cpAt(0), "--new", cpAt(20), "--proof", proofFile(0, 20, nil))
	runFail(t, "must be empty", "consistency", "--vkey", key.vkey, "--old", cpAt(0), "--new", cpAt(20), "--proof", proofFile(0, 20, prove(1, 20)))

	// An older checkpoint of a fork: the same key and origin, leaf 3 another.
	fork := newTestLog(t, 10, func(i int) []byte {
		if i == 3 {
			return []byte(`{"seq":3,"type":"customer.erased"}`)
		}
		return testLeaf(i)
	})
	forked := writeFile(t, "forked", fork.checkpoint(t, key, 10))
	runFail(t, "not proven a prefix", "consistency", "--vkey", key.vkey,
		"--old", forked, "--new", cpAt(20), "--proof", proofFile(10, 20, prove(10, 20)))
	// The right checkpoints with a proof between other sizes, or altered.
	runFail(t, "the proof is from 10 to 21", "consistency", "--vkey", key.vkey,
		"--old", cpAt(10), "--new", cpAt(20), "--proof", proofFile(10, 21, prove(10, 21)))
	runFail(t, "not proven a prefix", "consistency", "--vkey", key.vkey,
		"--old", cpAt(10), "--new", cpAt(20), "--proof", proofFile(10, 20, prove(11, 20)))
	bad := prove(300, 600)
	bad[0][31] ^= 1
	runFail(t, "not proven a prefix", "consistency", "--vkey", key.vkey,
		"--old", cpAt(300), "--new", cpAt(600), "--proof", proofFile(300, 600, bad))
	// Swapped, or of two logs.
	runFail(t, "larger than the new one", "consistency", "--vkey", key.vkey,
		"--old", cpAt(20), "--new", cpAt(10), "--proof", proofFile(20, 10, nil))
	otherLog := writeFile(t, "other", signNote(t, checkpointText("kihon4.test/other", 20, l.treeHash(t, 20)), key))
	runFail(t, "two logs", "consistency", "--vkey", key.vkey,
		"--old", cpAt(10), "--new", otherLog, "--proof", proofFile(10, 20, prove(10, 20)))
	// Either note by another key.
	other := newTestKey(t, testOrigin)
	runFail(t, "not signed by the log key", "consistency", "--vkey", key.vkey,
		"--old", cpAt(10), "--new", writeFile(t, "x", signNote(t, checkpointText(testOrigin, 20, l.treeHash(t, 20)), other)),
		"--proof", proofFile(10, 20, prove(10, 20)))
}

// tileServer serves tiles at their C2SP paths under /log/.
type tileServer struct {
	*httptest.Server
	mu       sync.Mutex
	tiles    map[string][]byte
	bearer   string // required when not ""
	requests []string
}

func newTileServer(t *testing.T, tiles map[string][]byte) *tileServer {
	s := &tileServer{tiles: tiles}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.requests = append(s.requests, r.URL.Path)
		if s.bearer != "" && r.Header.Get("Authorization") != "Bearer "+s.bearer {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		d, ok := s.tiles[strings.TrimPrefix(r.URL.Path, "/log/")]
		if r.Method != http.MethodGet || !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(d)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *tileServer) base() string { return s.URL + "/log" }

func flipTile(tiles map[string][]byte, path string, at int) map[string][]byte {
	m := map[string][]byte{}
	for p, d := range tiles {
		m[p] = d
	}
	d := append([]byte(nil), tiles[path]...)
	d[at] ^= 1
	m[path] = d
	return m
}

func TestTiles(t *testing.T) {
	key := newTestKey(t, testOrigin)
	const n = 600
	l := newTestLog(t, n, testLeaf)
	cp := writeFile(t, "checkpoint", l.checkpoint(t, key, n))
	tiles := l.tiles(t, n) // 0/000 0/001 0/002.p/88 1/000.p/2
	srv := newTileServer(t, tiles)
	tilesArgs := func(base string, extra ...string) []string {
		return append([]string{"tiles", "--vkey", key.vkey, "--origin", testOrigin, "--note", cp, "--base", base}, extra...)
	}
	leaves := writeFile(t, "leaves.jsonl", l.jsonl(0, n))

	if got := runOK(t, tilesArgs(srv.base())...); got != "ok size=600 leaves=0" {
		t.Errorf("got %q", got)
	}
	runOK(t, tilesArgs(srv.base()+"/")...)
	if got := runOK(t, tilesArgs(srv.base(), "--leaves", leaves)...); got != "ok size=600 leaves=600" {
		t.Errorf("got %q", got)
	}
	if got := runOK(t, tilesArgs(srv.base(), "--leaves", leaves, "--all")...); got != "ok size=600 leaves=600" {
		t.Errorf("got %q", got)
	}
	if got := runOK(t, tilesArgs(srv.base(), "--all")...); got != "ok size=600 leaves=0" {
		t.Errorf("got %q", got)
	}
	// A later part of the log, with or without the final newline.
	if got := runOK(t, tilesArgs(srv.base(), "--leaves", writeFile(t, "tail.jsonl", l.jsonl(500, n)), "--first", "500")...); got != "ok size=600 leaves=100" {
		t.Errorf("got %q", got)
	}
	mid := bytes.TrimSuffix(l.jsonl(250, 260), []byte("\n"))
	if got := runOK(t, tilesArgs(srv.base(), "--leaves", writeFile(t, "mid.jsonl", mid), "--first", "250")...); got != "ok size=600 leaves=10" {
		t.Errorf("got %q", got)
	}
	// Every request was for a tile at its C2SP path.
	srv.mu.Lock()
	for _, p := range srv.requests {
		if _, ok := tiles[strings.TrimPrefix(p, "/log/")]; !ok {
			t.Errorf("request for %s, which is no tile", p)
		}
	}
	srv.mu.Unlock()

	// Leaves that are not the log's.
	flipped := l.jsonl(0, n)
	flipped[bytes.Index(flipped, []byte(`"seq":77`))+6] ^= 1
	runFail(t, "line 78", tilesArgs(srv.base(), "--leaves", writeFile(t, "flipped.jsonl", flipped))...)
	runFail(t, "not leaf 501", tilesArgs(srv.base(), "--leaves", writeFile(t, "tail.jsonl", l.jsonl(500, n-1)), "--first", "501")...)
	crlf := bytes.ReplaceAll(l.jsonl(0, 3), []byte("\n"), []byte("\r\n"))
	runFail(t, "line 1", tilesArgs(srv.base(), "--leaves", writeFile(t, "crlf.jsonl", crlf))...)
	runFail(t, "the tree has only 600", tilesArgs(srv.base(), "--leaves", writeFile(t, "long.jsonl", append(l.jsonl(0, n), "{}\n"...)))...)
	runFail(t, "(--all)", tilesArgs(srv.base(), "--leaves", writeFile(t, "head.jsonl", l.jsonl(0, 100)), "--all")...)

	// Tampered tiles: a partial tile on the path to the root fails the
	// tree hash; a full level 0 tile fails when a leaf in it is proven, or
	// with --all.
	runFail(t, "downloaded inconsistent tile", tilesArgs(newTileServer(t, flipTile(tiles, "tile/0/002.p/88", 100)).base())...)
	runFail(t, "downloaded inconsistent tile", tilesArgs(newTileServer(t, flipTile(tiles, "tile/1/000.p/2", 40)).base())...)
	tampered := newTileServer(t, flipTile(tiles, "tile/0/000", 32*9))
	runOK(t, tilesArgs(tampered.base())...) // the tree hash needs only 1/000.p/2 and 0/002.p/88
	// tlog.TileHashReader hands out this tile's hashes unchecked (see
	// verifyAllTiles); --all checks it against its parent itself.
	runFail(t, "tile/0/000: downloaded inconsistent tile", tilesArgs(tampered.base(), "--all")...)
	// Leaf 9's hash is no part of leaf 9's proof, but leaf 8's.
	runFail(t, "not leaf 8", tilesArgs(tampered.base(), "--leaves", writeFile(t, "one.jsonl", l.jsonl(8, 9)), "--first", "8")...)
	runOK(t, tilesArgs(tampered.base(), "--leaves", writeFile(t, "one.jsonl", l.jsonl(9, 10)), "--first", "9")...)
	// A tile of the wrong length, a missing tile, no log at all.
	short := map[string][]byte{}
	for p, d := range tiles {
		short[p] = d
	}
	short["tile/0/002.p/88"] = short["tile/0/002.p/88"][:87*32]
	runFail(t, "2784 bytes, want 2816", tilesArgs(newTileServer(t, short).base())...)
	runFail(t, "404", tilesArgs(srv.URL+"/elsewhere")...)
	runFail(t, "is not an http", tilesArgs("ftp://example.test/log")...)
	// A checkpoint the tiles do not support: signed, but of another tree.
	fork := newTestLog(t, n, func(i int) []byte { return testLeaf(i + 1) })
	runFail(t, "downloaded inconsistent tile", "tiles", "--vkey", key.vkey, "--note",
		writeFile(t, "fork", fork.checkpoint(t, key, n)), "--base", srv.base())
	// A checkpoint by another key.
	runFail(t, "not signed by the log key", "tiles", "--vkey", newTestKey(t, testOrigin).vkey, "--note", cp, "--base", srv.base())
}

func TestTilesBearer(t *testing.T) {
	key := newTestKey(t, testOrigin)
	l := newTestLog(t, 40, testLeaf)
	cp := writeFile(t, "checkpoint", l.checkpoint(t, key, 40))
	srv := newTileServer(t, l.tiles(t, 40))
	srv.bearer = "s3cret-token"
	runFail(t, "401", "tiles", "--vkey", key.vkey, "--note", cp, "--base", srv.base())
	runFail(t, "401", "tiles", "--vkey", key.vkey, "--note", cp, "--base", srv.base(), "--bearer", "wrong")
	runOK(t, "tiles", "--vkey", key.vkey, "--note", cp, "--base", srv.base(), "--bearer", "s3cret-token",
		"--leaves", writeFile(t, "leaves.jsonl", l.jsonl(0, 40)))
}

// A checkpoint at a size whose partial tile the log has deleted, the full
// tile being there: tlog-tiles lets the client read the full one instead.
func TestTilesPartialFallback(t *testing.T) {
	key := newTestKey(t, testOrigin)
	l := newTestLog(t, 600, testLeaf)
	tiles := l.tiles(t, 600)
	for p, d := range l.tiles(t, 300) { // 0/000 0/001.p/44 1/000.p/1
		tiles[p] = d
	}
	delete(tiles, "tile/0/001.p/44")
	srv := newTileServer(t, tiles)
	cp := writeFile(t, "checkpoint", l.checkpoint(t, key, 300))
	if got := runOK(t, "tiles", "--vkey", key.vkey, "--note", cp, "--base", srv.base(), "--all",
		"--leaves", writeFile(t, "leaves.jsonl", l.jsonl(0, 300))); got != "ok size=300 leaves=300" {
		t.Errorf("got %q", got)
	}
	// Without the full tile either, it fails, naming both.
	delete(tiles, "tile/0/001")
	runFail(t, "and the full tile", "tiles", "--vkey", key.vkey, "--note", cp, "--base", newTileServer(t, tiles).base())
}

// The shape of the tlog-tiles example, 70,000 leaves: three levels of tiles,
// a full level 1 tile among them.
func TestTilesThreeLevels(t *testing.T) {
	key := newTestKey(t, testOrigin)
	const n = 70000
	l := newTestLog(t, n, testLeaf)
	tiles := l.tiles(t, n)
	srv := newTileServer(t, tiles)
	cp := writeFile(t, "checkpoint", l.checkpoint(t, key, n))
	args := []string{"tiles", "--vkey", key.vkey, "--note", cp, "--base", srv.base()}
	runOK(t, args...)
	// Leaves on both sides of the first level 1 tile's end (65,536), and the last ones.
	if got := runOK(t, append(args, "--first", "65530", "--leaves", writeFile(t, "a.jsonl", l.jsonl(65530, 65545)))...); got != "ok size=70000 leaves=15" {
		t.Errorf("got %q", got)
	}
	if got := runOK(t, append(args, "--all", "--first", "69990", "--leaves", writeFile(t, "b.jsonl", l.jsonl(69990, n)))...); got != "ok size=70000 leaves=10" {
		t.Errorf("got %q", got)
	}
	// The full level 1 tile is not on the root's path, only --all reads it.
	bad := newTileServer(t, flipTile(tiles, "tile/1/000", 32*200))
	runOK(t, "tiles", "--vkey", key.vkey, "--note", cp, "--base", bad.base())
	runFail(t, "downloaded inconsistent tile", "tiles", "--vkey", key.vkey, "--note", cp, "--base", bad.base(), "--all")
	runFail(t, "not leaf 200", "tiles", "--vkey", key.vkey, "--note", cp, "--base", bad.base(),
		"--first", "200", "--leaves", writeFile(t, "c.jsonl", l.jsonl(200, 201)))
}

func TestTilesEmptyTree(t *testing.T) {
	key := newTestKey(t, testOrigin)
	l := newTestLog(t, 0, testLeaf)
	srv := newTileServer(t, map[string][]byte{})
	cp := writeFile(t, "checkpoint", l.checkpoint(t, key, 0))
	if got := runOK(t, "tiles", "--vkey", key.vkey, "--note", cp, "--base", srv.base(), "--all"); got != "ok size=0 leaves=0" {
		t.Errorf("got %q", got)
	}
	runFail(t, "the tree has only 0", "tiles", "--vkey", key.vkey, "--note", cp, "--base", srv.base(),
		"--leaves", writeFile(t, "one.jsonl", []byte("{}\n")))
}

// ---------------------------------------------------------------------------
// Cosignatures, made here by hand as c2sp.org/tlog-cosignature says.

// newCosigner makes an Ed25519 cosigner key: its cosignature/v1 vkey
// <name>+<hex key ID>+<base64(0x04 || public key)>, with key ID
// SHA-256(name || "\n" || 0x04 || public key)[:4].
func newCosigner(t *testing.T, name string) (string, *cosigner) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	typed := append([]byte{0x04}, pub...)
	id := keyID(name, typed)
	return fmt.Sprintf("%s+%08x+%s", name, id, base64.StdEncoding.EncodeToString(typed)), &cosigner{name, id, priv}
}

type cosigner struct {
	name string
	id   uint32
	priv ed25519.PrivateKey
}

// line is the signature line of a cosignature over text at timestamp ts:
// "— <name> base64(key ID || big-endian uint64 timestamp || Ed25519
// signature of "cosignature/v1\ntime <ts>\n" || text)".
func (c *cosigner) line(text string, ts uint64) string {
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, text)
	blob := binary.BigEndian.AppendUint32(nil, c.id)
	blob = binary.BigEndian.AppendUint64(blob, ts)
	blob = append(blob, ed25519.Sign(c.priv, []byte(msg))...)
	return "— " + c.name + " " + base64.StdEncoding.EncodeToString(blob) + "\n"
}

func TestCosignatureMessageSpecExample(t *testing.T) {
	// c2sp.org/tlog-cosignature's example of a signed message.
	text := "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
	want := "cosignature/v1\ntime 1679315147\n" + text
	if got := string(CosignatureMessage(1679315147, []byte(text))); got != want {
		t.Errorf("CosignatureMessage = %q, want %q", got, want)
	}
	// Its example cosignature line frames key ID, timestamp, signature: 4+8+64 bytes.
	blob, err := base64.StdEncoding.DecodeString("jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==")
	if err != nil || len(blob) != 76 || binary.BigEndian.Uint64(blob[4:12]) != 1679315147 {
		t.Errorf("the spec's cosignature: %d bytes, %v", len(blob), err)
	}
}

func TestCosignatures(t *testing.T) {
	key := newTestKey(t, testOrigin)
	l := newTestLog(t, 20, testLeaf)
	text := checkpointText(testOrigin, 20, l.treeHash(t, 20))
	signed := string(signNote(t, text, key))
	v1, w1 := newCosigner(t, "witness.test/w1")
	v2, w2 := newCosigner(t, "witness.test/w2")
	v3, _ := newCosigner(t, "witness.test/w3") // never cosigns
	const ts = 1767225600
	check := func(note string, extra ...string) []string {
		return append([]string{"checkpoint", "--vkey", key.vkey, "--note", writeFile(t, "cosigned", []byte(note))}, extra...)
	}
	both := signed + w1.line(text, ts) + w2.line(text, ts+1)

	if got := runOK(t, check(both, "--cosigner", v1, "--cosigner", v2)...); !strings.HasSuffix(got, " cosigned=2") {
		t.Errorf("got %q", got)
	}
	// Cosignatures of keys not asked for are ignored, as are cosigners
	// beyond the quorum that did not cosign.
	if got := runOK(t, check(both)...); !strings.HasSuffix(got, " cosigned=0") {
		t.Errorf("got %q", got)
	}
	if got := runOK(t, check(both, "--cosigner", v1)...); !strings.HasSuffix(got, " cosigned=1") {
		t.Errorf("got %q", got)
	}
	if got := runOK(t, check(both, "--cosigner", v1, "--cosigner", v2, "--cosigner", v3, "--quorum", "2")...); !strings.HasSuffix(got, " cosigned=2") {
		t.Errorf("got %q", got)
	}
	runFail(t, "cosigned by 2 of the 3 cosigners, want at least 3", check(both, "--cosigner", v1, "--cosigner", v2, "--cosigner", v3)...)
	runFail(t, "cosigned by 1 of the 2", check(signed+w1.line(text, ts), "--cosigner", v1, "--cosigner", v2)...)
	if got := runOK(t, check(signed+w1.line(text, ts), "--cosigner", v1, "--cosigner", v2, "--quorum", "1")...); !strings.HasSuffix(got, " cosigned=1") {
		t.Errorf("got %q", got)
	}
	// The order of the signature lines does not matter, nor does a cosignature
	// line twice.
	runOK(t, check(text+"\n"+w2.line(text, ts)+w1.line(text, ts)+strings.SplitN(signed, "\n\n", 2)[1]+w1.line(text, ts), "--cosigner", v1, "--cosigner", v2)...)

	// A bad cosignature by a known cosigner fails the whole note.
	good := w1.line(text, ts)
	blob, _ := base64.StdEncoding.DecodeString(strings.Fields(good)[2])
	blob[4+8+10] ^= 1
	forged := "— witness.test/w1 " + base64.StdEncoding.EncodeToString(blob) + "\n"
	runFail(t, "invalid signature for key witness.test/w1", check(signed+forged, "--cosigner", v1, "--quorum", "0")...)
	// ...as does one whose timestamp is not the signed one.
	binary.BigEndian.PutUint64(blob[4:], ts+1)
	blob[4+8+10] ^= 1
	runFail(t, "invalid signature", check(signed+"— witness.test/w1 "+base64.StdEncoding.EncodeToString(blob)+"\n", "--cosigner", v1)...)
	// A timestamp above 2^63-1 is refused even when signed.
	runFail(t, "invalid signature", check(signed+w1.line(text, math.MaxInt64+1), "--cosigner", v1)...)
	// A cosignature over another checkpoint.
	otherText := checkpointText(testOrigin, 19, l.treeHash(t, 19))
	runFail(t, "invalid signature", check(signed+w1.line(otherText, ts), "--cosigner", v1)...)

	// With extension lines, the cosigned message is the whole note text,
	// extension lines included: a cosignature over the first three lines
	// only does not verify.
	extText := checkpointText(testOrigin, 20, l.treeHash(t, 20), "kihon4-extension 1")
	extSigned := string(signNote(t, extText, key))
	runOK(t, check(extSigned+w1.line(extText, ts), "--cosigner", v1)...)
	runFail(t, "invalid signature", check(extSigned+w1.line(text, ts), "--cosigner", v1)...)

	// Cosignatures alone are not the log's signature.
	runFail(t, "only cosigned", check(text+"\n"+w1.line(text, ts), "--cosigner", v1)...)
	// Keys that are no cosignature/v1 keys.
	runFail(t, "signature type 0x01", check(both, "--cosigner", key.vkey)...)
	i := strings.Index(v1, "+")
	runFail(t, "key ID", check(both, "--cosigner", v1[:i]+"+00000000"+v1[i+9:])...)
	runFail(t, "malformed verifier key", check(both, "--cosigner", "witness.test/w1")...)

	// The cosignature checks apply in the other subcommands too.
	tiles := newTileServer(t, l.tiles(t, 20))
	runOK(t, "tiles", "--vkey", key.vkey, "--note", writeFile(t, "cp", []byte(both)), "--base", tiles.base(), "--cosigner", v1, "--cosigner", v2)
	runFail(t, "cosigned by 0 of the 1", "tiles", "--vkey", key.vkey, "--note", writeFile(t, "cp", []byte(signed)), "--base", tiles.base(), "--cosigner", v1)
}
