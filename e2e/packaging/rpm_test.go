package packaging_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// A minimal reader of an rpm's metadata (lead, signature header, main
// header), enough to check what the package declares without the rpm tool,
// which a Debian machine does not have. Format: rpm's
// docs/manual/format.md ("Package File Format").

// Header tags used by the tests (rpmtag.h).
const (
	tagName          = 1000
	tagVersion       = 1001
	tagRelease       = 1002
	tagArch          = 1022
	tagPostIn        = 1024
	tagPreUn         = 1025
	tagPostUn        = 1026
	tagFileModes     = 1030
	tagFileFlags     = 1037
	tagFileUserName  = 1039
	tagFileGroupName = 1040
	tagRequireName   = 1049
	tagDirIndexes    = 1116
	tagBaseNames     = 1117
	tagDirNames      = 1118
)

// File flags (rpmfiles.h).
const (
	rpmFileConfig    = 1 << 0
	rpmFileNoReplace = 1 << 4
)

// rpmHeader maps a tag to its value: string, []string, []int64 or []byte.
type rpmHeader map[int32]any

func (h rpmHeader) str(tag int32) string {
	s, _ := h[tag].(string)
	return s
}

func (h rpmHeader) strs(tag int32) []string {
	s, _ := h[tag].([]string)
	return s
}

func (h rpmHeader) ints(tag int32) []int64 {
	s, _ := h[tag].([]int64)
	return s
}

// rpmFile is one entry of the package's file list.
type rpmFile struct {
	Mode         os.FileMode // permission bits only
	Type         uint32      // S_IFMT bits
	Flags        int64
	User, Group  string
	IsConfig     bool
	HasNoReplace bool
}

// files lists the package's files by path.
func (h rpmHeader) files() (map[string]rpmFile, error) {
	base, dirs, idx := h.strs(tagBaseNames), h.strs(tagDirNames), h.ints(tagDirIndexes)
	modes, flags := h.ints(tagFileModes), h.ints(tagFileFlags)
	users, groups := h.strs(tagFileUserName), h.strs(tagFileGroupName)
	n := len(base)
	if len(idx) != n || len(modes) != n || len(flags) != n || len(users) != n || len(groups) != n {
		return nil, fmt.Errorf("file list arrays disagree: %d names, %d dir indexes, %d modes, %d flags, %d users, %d groups",
			n, len(idx), len(modes), len(flags), len(users), len(groups))
	}
	out := make(map[string]rpmFile, n)
	for i := range base {
		if idx[i] < 0 || int(idx[i]) >= len(dirs) {
			return nil, fmt.Errorf("file %q: dir index %d out of range", base[i], idx[i])
		}
		m := uint32(uint16(modes[i]))
		out[dirs[idx[i]]+base[i]] = rpmFile{
			Mode:         os.FileMode(m & 0o7777),
			Type:         m & 0o170000,
			Flags:        flags[i],
			User:         users[i],
			Group:        groups[i],
			IsConfig:     flags[i]&rpmFileConfig != 0,
			HasNoReplace: flags[i]&rpmFileNoReplace != 0,
		}
	}
	return out, nil
}

// readRPM returns the main header of the rpm at path.
func readRPM(path string) (rpmHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	lead := make([]byte, 96)
	if _, err := io.ReadFull(f, lead); err != nil {
		return nil, fmt.Errorf("lead: %w", err)
	}
	if !bytes.Equal(lead[:4], []byte{0xed, 0xab, 0xee, 0xdb}) {
		return nil, fmt.Errorf("not an rpm (lead magic %x)", lead[:4])
	}
	// The signature header, padded to a multiple of 8 bytes.
	sigLen, _, err := readHeader(f)
	if err != nil {
		return nil, fmt.Errorf("signature header: %w", err)
	}
	if pad := (8 - sigLen%8) % 8; pad > 0 {
		if _, err := io.CopyN(io.Discard, f, int64(pad)); err != nil {
			return nil, err
		}
	}
	_, h, err := readHeader(f)
	if err != nil {
		return nil, fmt.Errorf("main header: %w", err)
	}
	return h, nil
}

// readHeader reads one header structure and returns its length in bytes
// and its entries.
func readHeader(r io.Reader) (int, rpmHeader, error) {
	var intro struct {
		Magic    [3]byte
		Version  byte
		Reserved [4]byte
		NIndex   uint32
		HSize    uint32
	}
	if err := binary.Read(r, binary.BigEndian, &intro); err != nil {
		return 0, nil, err
	}
	if intro.Magic != [3]byte{0x8e, 0xad, 0xe8} {
		return 0, nil, fmt.Errorf("bad header magic %x", intro.Magic)
	}
	if intro.NIndex > 1<<16 || intro.HSize > 1<<28 {
		return 0, nil, fmt.Errorf("implausible header: %d entries, %d bytes", intro.NIndex, intro.HSize)
	}
	type entry struct {
		Tag, Type, Offset, Count int32
	}
	entries := make([]entry, intro.NIndex)
	if err := binary.Read(r, binary.BigEndian, entries); err != nil {
		return 0, nil, err
	}
	store := make([]byte, intro.HSize)
	if _, err := io.ReadFull(r, store); err != nil {
		return 0, nil, err
	}
	h := rpmHeader{}
	for _, e := range entries {
		if e.Offset < 0 || int(e.Offset) > len(store) || e.Count < 0 {
			return 0, nil, fmt.Errorf("tag %d: offset %d out of the %d-byte store", e.Tag, e.Offset, len(store))
		}
		data := store[e.Offset:]
		switch e.Type {
		case 3, 4, 5: // INT16, INT32, INT64
			size := map[int32]int{3: 2, 4: 4, 5: 8}[e.Type]
			if len(data) < size*int(e.Count) {
				return 0, nil, fmt.Errorf("tag %d: truncated", e.Tag)
			}
			v := make([]int64, e.Count)
			for i := range v {
				switch size {
				case 2:
					v[i] = int64(int16(binary.BigEndian.Uint16(data[2*i:])))
				case 4:
					v[i] = int64(int32(binary.BigEndian.Uint32(data[4*i:])))
				default:
					v[i] = int64(binary.BigEndian.Uint64(data[8*i:]))
				}
			}
			h[e.Tag] = v
		case 6: // STRING
			s, _, ok := bytes.Cut(data, []byte{0})
			if !ok {
				return 0, nil, fmt.Errorf("tag %d: unterminated string", e.Tag)
			}
			h[e.Tag] = string(s)
		case 8, 9: // STRING_ARRAY, I18NSTRING
			v := make([]string, 0, e.Count)
			for range e.Count {
				s, rest, ok := bytes.Cut(data, []byte{0})
				if !ok {
					return 0, nil, fmt.Errorf("tag %d: unterminated string", e.Tag)
				}
				v = append(v, string(s))
				data = rest
			}
			if e.Type == 9 && len(v) > 0 {
				h[e.Tag] = v[0]
			} else {
				h[e.Tag] = v
			}
		case 7: // BIN
			if len(data) < int(e.Count) {
				return 0, nil, fmt.Errorf("tag %d: truncated", e.Tag)
			}
			h[e.Tag] = data[:e.Count]
		}
	}
	return 16 + 16*int(intro.NIndex) + int(intro.HSize), h, nil
}
