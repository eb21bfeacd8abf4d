package deckctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// pushChunkSize is the data per upload message: well under gRPC's 4 MiB
// message limit, large enough that per-message overhead does not matter.
const pushChunkSize = 256 << 10

func artifactCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "artifact",
		Aliases: []string{"artifacts"},
		Short:   "Push build artifacts (AEM packages, dispatcher config) and inspect artifact sets",
	}
	c.AddCommand(artifactPushCmd(g), artifactListCmd(g), artifactShowCmd(g))
	return c
}

// artifactJSON is the -o json shape of one artifact.
type artifactJSON struct {
	Name         string     `json:"name"`
	Kind         string     `json:"kind"`
	SHA256       string     `json:"sha256"`
	Size         int64      `json:"size"`
	PackageID    string     `json:"package_id,omitempty"`
	Dependencies []string   `json:"dependencies,omitempty"`
	PushedAt     *time.Time `json:"pushed_at,omitempty"`
	// AlreadyStored is set by push only.
	AlreadyStored *bool `json:"already_stored,omitempty"`
}

type externalJSON struct {
	Package  string `json:"package"`
	Requires string `json:"requires"`
}

// setJSON is the -o json shape of a set: packages in install order.
type setJSON struct {
	ID         string         `json:"id"`
	Version    string         `json:"version"`
	CreatedAt  *time.Time     `json:"created_at,omitempty"`
	CreatedBy  string         `json:"created_by,omitempty"`
	Packages   []artifactJSON `json:"packages"`
	Dispatcher *artifactJSON  `json:"dispatcher"`
	External   []externalJSON `json:"external_dependencies"`
}

// kindName is the word deckctl uses for a kind (the classifier's).
func kindName(k pb.ArtifactKind) string {
	switch k {
	case pb.ArtifactKind_ARTIFACT_KIND_AEM_PACKAGE:
		return "aem-package"
	case pb.ArtifactKind_ARTIFACT_KIND_DISPATCHER_CONFIG:
		return "dispatcher-config"
	}
	return "unknown"
}

func toArtifactJSON(a *pb.ArtifactInfo) artifactJSON {
	j := artifactJSON{Name: a.Name, Kind: kindName(a.Kind), SHA256: a.Sha256, Size: a.Size, PackageID: a.PackageId, Dependencies: a.Dependencies}
	if a.PushedAt != nil {
		t := a.PushedAt.AsTime()
		j.PushedAt = &t
	}
	return j
}

func toSetJSON(s *pb.ArtifactSet) setJSON {
	j := setJSON{ID: s.Id, Version: s.Version, CreatedBy: s.CreatedBy, Packages: []artifactJSON{}, External: []externalJSON{}}
	if s.CreatedAt != nil {
		t := s.CreatedAt.AsTime()
		j.CreatedAt = &t
	}
	for _, p := range s.Packages {
		j.Packages = append(j.Packages, toArtifactJSON(p))
	}
	if s.Dispatcher != nil {
		d := toArtifactJSON(s.Dispatcher)
		j.Dispatcher = &d
	}
	for _, e := range s.ExternalDependencies {
		j.External = append(j.External, externalJSON{Package: e.PackageId, Requires: e.Dependency})
	}
	return j
}

// pushFiles expands the arguments: a pattern the shell left alone (quoted,
// or run without a shell) is globbed here, so `deckctl artifact push
// 'target/*.zip'` works too. Every file is checked before anything is
// uploaded, so a typo does not leave half a set pushed.
func pushFiles(args []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(p string) error {
		st, err := os.Stat(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: no such file", p)
			}
			return err
		}
		if st.IsDir() {
			return fmt.Errorf("%s is a directory; push the zips in it (%s)", p, filepath.Join(p, "*.zip"))
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
		return nil
	}
	for _, a := range args {
		if _, err := os.Lstat(a); err != nil && strings.ContainsAny(a, "*?[") {
			matches, gerr := filepath.Glob(a)
			if gerr != nil {
				return nil, fmt.Errorf("%s: %v", a, gerr)
			}
			if len(matches) == 0 {
				return nil, fmt.Errorf("no file matches %s", a)
			}
			for _, m := range matches {
				if err := add(m); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := add(a); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// isTerminal reports whether w is a terminal: progress bars are for people
// watching, not for pipes, files and tests.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// pushOne streams one file: a header, then chunks read from the file as
// they are sent, so neither side holds the file in memory.
func pushOne(ctx context.Context, client pb.ArtifactServiceClient, path string, bar func(name string, size int64) *progressbar.ProgressBar) (*pb.PushArtifactResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	name := filepath.Base(path)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // a failed send ends the stream instead of leaving it open
	stream, err := client.PushArtifact(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&pb.PushArtifactRequest{Msg: &pb.PushArtifactRequest_Header{Header: &pb.PushArtifactHeader{Name: name, Size: st.Size()}}}); err != nil {
		return nil, pushError(stream, err)
	}
	var progress *progressbar.ProgressBar
	if bar != nil {
		progress = bar(name, st.Size())
		defer progress.Close()
	}
	for {
		// A fresh buffer per message: gRPC may still hold a sent message
		// after Send returns, so it must not be reused.
		buf := make([]byte, pushChunkSize)
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			if err := stream.Send(&pb.PushArtifactRequest{Msg: &pb.PushArtifactRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				return nil, pushError(stream, err)
			}
			if progress != nil {
				_ = progress.Add(n)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read %s: %w", path, rerr)
		}
	}
	if progress != nil {
		_ = progress.Finish()
	}
	return stream.CloseAndRecv()
}

// pushError returns the server's reason when a Send fails: gRPC reports
// io.EOF from Send when the server has already answered (e.g. refused
// the file), and the answer comes from CloseAndRecv.
func pushError(stream pb.ArtifactService_PushArtifactClient, err error) error {
	if err == io.EOF {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return rerr
		}
	}
	return err
}

func artifactPushCmd(g *globals) *cobra.Command {
	var version string
	c := &cobra.Command{
		Use:   "push FILE... [--version V]",
		Short: "Upload build zips (e.g. target/*.zip) and group them into an artifact set",
		Long: `Upload each zip to the control plane, which classifies it as an AEM content
package or a dispatcher configuration, then create the artifact set of all of
them and print its id. Bytes the server already has are not stored twice.
A set holds at most one dispatcher configuration and one version of each
package; packages are installed in dependency order. Uploads are not bounded
by --timeout unless it is given.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := pushFiles(args)
			if err != nil {
				return err
			}
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := pb.NewArtifactServiceClient(conn)
			// A large upload on a slow link takes as long as it takes;
			// only an explicit --timeout bounds it.
			upCtx := cmd.Context()
			if cmd.Flags().Changed("timeout") {
				var cancel context.CancelFunc
				upCtx, cancel = context.WithTimeout(upCtx, g.timeout)
				defer cancel()
			}
			var bar func(string, int64) *progressbar.ProgressBar
			if g.output == "table" && isTerminal(g.out) {
				bar = func(name string, size int64) *progressbar.ProgressBar {
					return progressbar.NewOptions64(size,
						progressbar.OptionSetWriter(g.out),
						progressbar.OptionSetDescription(name),
						progressbar.OptionShowBytes(true),
						progressbar.OptionShowCount(),
						progressbar.OptionSetWidth(30),
						progressbar.OptionThrottle(100*time.Millisecond),
						progressbar.OptionClearOnFinish(),
					)
				}
			}
			var pushed []*pb.PushArtifactResponse
			digests := make([]string, 0, len(files))
			for _, f := range files {
				resp, err := pushOne(upCtx, client, f, bar)
				if err != nil {
					return err
				}
				pushed = append(pushed, resp)
				digests = append(digests, resp.Artifact.Sha256)
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			created, err := client.CreateSet(ctx, &pb.CreateSetRequest{Version: version, Digests: digests})
			if err != nil {
				return err
			}
			if g.output == "json" {
				arts := make([]artifactJSON, 0, len(pushed))
				for _, p := range pushed {
					j := toArtifactJSON(p.Artifact)
					already := p.AlreadyStored
					j.AlreadyStored = &already
					arts = append(arts, j)
				}
				return g.printJSON(map[string]any{"artifacts": arts, "set": toSetJSON(created.Set), "created": created.Created})
			}
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tKIND\tPACKAGE\tSIZE\tSHA256\tSTORED")
			for _, p := range pushed {
				a := p.Artifact
				stored := "stored"
				if p.AlreadyStored {
					stored = "already stored"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, kindName(a.Kind), dash(a.PackageId), bytesHuman(uint64(a.Size)), shortDigest(a.Sha256), stored)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			s := created.Set
			what := "created"
			if !created.Created {
				what = "unchanged (the same version and artifacts were pushed before)"
			}
			fmt.Fprintf(g.out, "\nset %s, version %s: %s\n", s.Id, dash(s.Version), what)
			printSetOrder(g.out, s)
			return nil
		},
	}
	c.Flags().StringVar(&version, "version", "", "version label of the set (e.g. the build's version)")
	return c
}

// printSetOrder prints the install order, the dispatcher configuration and
// the external dependencies of a set.
func printSetOrder(w io.Writer, s *pb.ArtifactSet) {
	if len(s.Packages) > 0 {
		ids := make([]string, len(s.Packages))
		for i, p := range s.Packages {
			ids[i] = p.PackageId
		}
		fmt.Fprintf(w, "install order: %s\n", strings.Join(ids, " -> "))
	} else {
		fmt.Fprintln(w, "install order: no AEM packages")
	}
	if s.Dispatcher != nil {
		fmt.Fprintf(w, "dispatcher config: %s\n", s.Dispatcher.Name)
	} else {
		fmt.Fprintln(w, "dispatcher config: none")
	}
	if len(s.ExternalDependencies) > 0 {
		fmt.Fprintln(w, "external dependencies (must already be installed on the targets; checked before installing):")
		for _, e := range s.ExternalDependencies {
			fmt.Fprintf(w, "  %s requires %s\n", e.PackageId, e.Dependency)
		}
	}
}

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func artifactListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List artifact sets, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := pb.NewArtifactServiceClient(conn).ListSets(ctx, &pb.ListSetsRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				out := make([]setJSON, 0, len(resp.Sets))
				for _, s := range resp.Sets {
					out = append(out, toSetJSON(s))
				}
				return g.printJSON(out)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SET\tVERSION\tCREATED\tBY\tPACKAGES\tDISPATCHER\tEXTERNAL DEPS")
			for _, s := range resp.Sets {
				var at time.Time
				if s.CreatedAt != nil {
					at = s.CreatedAt.AsTime()
				}
				disp := "-"
				if s.Dispatcher != nil {
					disp = s.Dispatcher.Name
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\n", s.Id, dash(s.Version), ago(at, now), dash(s.CreatedBy), len(s.Packages), disp, len(s.ExternalDependencies))
			}
			return tw.Flush()
		},
	}
}

func artifactShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show SET",
		Short: "Show a set's artifacts, install order and external dependencies",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := pb.NewArtifactServiceClient(conn).GetSet(ctx, &pb.GetSetRequest{Id: args[0]})
			if err != nil {
				return err
			}
			s := resp.Set
			if g.output == "json" {
				return g.printJSON(toSetJSON(s))
			}
			created := "-"
			if s.CreatedAt != nil {
				created = s.CreatedAt.AsTime().Local().Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(g.out, "set:      %s\nversion:  %s\ncreated:  %s by %s\n\n", s.Id, dash(s.Version), created, dash(s.CreatedBy))
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ORDER\tKIND\tFILE\tPACKAGE\tSIZE\tSHA256")
			for i, p := range s.Packages {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, kindName(p.Kind), p.Name, p.PackageId, bytesHuman(uint64(p.Size)), shortDigest(p.Sha256))
			}
			if d := s.Dispatcher; d != nil {
				fmt.Fprintf(tw, "-\t%s\t%s\t-\t%s\t%s\n", kindName(d.Kind), d.Name, bytesHuman(uint64(d.Size)), shortDigest(d.Sha256))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(g.out)
			printSetOrder(g.out, s)
			return nil
		},
	}
}
