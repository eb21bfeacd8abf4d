package safezip

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// dispatcherLikeZip builds a 2,000-file AMS-style dispatcher tree: 20 directories of
// configuration files of a few kilobytes, and an enabled_* symlink for a tenth of them.
func dispatcherLikeZip(tb testing.TB) []byte {
	var ents []zent
	for d := 0; d < 20; d++ {
		dirName := fmt.Sprintf("conf.d/available_%02d", d)
		for i := 0; i < 100; i++ {
			name := fmt.Sprintf("%s/site_%03d.vhost", dirName, i)
			body := strings.Repeat(fmt.Sprintf("<VirtualHost *:80>\n  ServerName site%d-%d.example.com\n</VirtualHost>\n", d, i), 40)
			ents = append(ents, fileMode(name, body, 0o644))
			if i%10 == 0 {
				ents = append(ents, link(fmt.Sprintf("conf.d/enabled_%02d/site_%03d.vhost", d, i), fmt.Sprintf("../available_%02d/site_%03d.vhost", d, i)))
			}
		}
	}
	return buildZip(tb, ents...)
}

func BenchmarkExtract(b *testing.B) {
	data := dispatcherLikeZip(b)
	parent := b.TempDir()
	b.ReportAllocs()
	var written int64
	i := 0
	for b.Loop() {
		dest := filepath.Join(parent, fmt.Sprint(i))
		i++
		res, err := ExtractReader(bytes.NewReader(data), int64(len(data)), dest, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if res.Files != 2000 || res.Symlinks != 200 {
			b.Fatalf("unexpected result %+v", res)
		}
		written = res.Bytes
	}
	b.SetBytes(written)
}
