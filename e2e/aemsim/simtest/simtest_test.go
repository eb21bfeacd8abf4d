package simtest_test

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/deckhand-dev/deckhand/e2e/aemsim/simtest"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServerRestartKeepsState(t *testing.T) {
	s := simtest.New(t)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("package", "a.zip")
	require.NoError(t, err)
	_, err = fw.Write(aempkgtest.Package(aempkgtest.Spec{Group: "g", Name: "a", Version: "1"}))
	require.NoError(t, err)
	require.NoError(t, mw.Close())
	req, err := http.NewRequest(http.MethodPost, s.URL+"/crx/packmgr/service/.json?cmd=upload", &buf)
	require.NoError(t, err)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.SetBasicAuth(simtest.User, simtest.Password)
	resp, err := client.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), `"success":true`)
	require.Len(t, s.Requests(), 1)

	client.CloseIdleConnections()
	s.Restart()
	_, ok := s.Package("g:a:1")
	require.True(t, ok)
	require.Empty(t, s.Requests())
}
