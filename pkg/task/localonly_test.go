package task

import (
	"testing"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestNoTaskCarriesACommand guards the rule that the server chooses a task,
// never a command: configtest, reload and load-balancer commands and AEM
// credentials live in the agent's own config. Every string field a task can
// carry is listed here with why it is safe; a new one fails this test until
// someone decides it cannot smuggle a command, a path to execute or a
// credential.
func TestNoTaskCarriesACommand(t *testing.T) {
	allowed := map[protoreflect.FullName]string{
		"deckhand.v1.Task.id":                         "derived task id",
		"deckhand.v1.Task.execution_id":               "an id",
		"deckhand.v1.Task.step":                       "a step name",
		"deckhand.v1.Task.host_id":                    "a host id",
		"deckhand.v1.ArtifactRef.sha256":              "a digest; the agent only downloads and verifies it",
		"deckhand.v1.ArtifactRef.name":                "for messages only",
		"deckhand.v1.DispatcherRestoreTask.backup_id": "names a backup the agent made; looked up in its own index",
		"deckhand.v1.CacheFlushTask.invalidate_paths": "cache paths, validated absolute without '..'; sent as HTTP headers or resolved under the configured docroot",
		"deckhand.v1.CacheFlushTask.flush_paths":      "as invalidate_paths",
		"deckhand.v1.BuildTask.repository":            "cloned with git (argv, no shell) only when it matches the builder's own allowed_repositories",
		"deckhand.v1.BuildTask.branch":                "a git ref, validated (no leading '-', no '..') and passed after '--'",
		"deckhand.v1.BuildTask.profile":               "names a build profile in the builder's config; the command lives there",
		"deckhand.v1.CodeScanTask.build_task_id":      "names the workspace of an earlier build task",
		"deckhand.v1.CodeScanTask.profile":            "names a scan profile in the builder's config; the command lives there",
	}
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		fields := md.Fields()
		for i := 0; i < fields.Len(); i++ {
			f := fields.Get(i)
			switch f.Kind() {
			case protoreflect.StringKind, protoreflect.BytesKind:
				_, ok := allowed[f.FullName()]
				require.True(t, ok, "task field %s is a string/bytes field that is not in the allow list: can it carry a command? decide and list it", f.FullName())
			case protoreflect.MessageKind:
				if f.Message().FullName().Parent() == "deckhand.v1" {
					walk(f.Message())
				}
			}
		}
	}
	walk((&pb.Task{}).ProtoReflect().Descriptor())
	for name := range allowed {
		require.True(t, seen[name.Parent()], "allow list names %s, which no task message has any more", name)
	}
}
