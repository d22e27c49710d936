// Package connblob keeps the connections file in a blob of the lock
// storage account (issue 18 §3), so an operator can change the connections
// without a redeploy: Put validates a file with config.ParseConnections
// before it writes it, and writes only over the version it read (If-Match
// on the ETag), so two operators never overwrite each other; Read is a
// conditional GET (If-None-Match), so an instance polling for a change
// costs one 304 while nothing changed; a Watcher keeps the last accepted
// set and refuses a bad change, keeping what runs.
//
// With CONNECTIONS_BLOB set, the server reads the file at start and polls
// it with a Watcher (package server, connections.go), swapping the broker's
// set (broker.Broker.SetConnections) on an accepted change.
package connblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
)

// MaxSize bounds the file read: a connections file is a few kilobytes, and
// an instance must not hold whatever a mistaken upload put there.
const MaxSize = 1 << 20

// Location is where the file lives: a container and a blob name in it.
type Location struct {
	Container, Blob string
}

// containerPattern is the blob service's container name rule
// (https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata).
var containerPattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)

// ParseLocation reads "<container>/<blob>", the form of the setting.
func ParseLocation(s string) (Location, error) {
	container, name, ok := strings.Cut(s, "/")
	if !ok || !containerPattern.MatchString(container) || name == "" || len(name) > 1024 {
		return Location{}, fmt.Errorf("found %q; must be <container>/<blob>, such as token-locks/connections.json (a container name is 3-63 characters of a-z, 0-9 and -)", s)
	}
	return Location{Container: container, Blob: name}, nil
}

// String returns the location as the setting writes it.
func (l Location) String() string { return l.Container + "/" + l.Blob }

// Store reads and writes the connections file at one Location.
type Store struct {
	blob *blockblob.Client
	loc  Location
}

// New returns the Store of loc in client's account.
func New(client *azblob.Client, loc Location) *Store {
	return &Store{blob: client.ServiceClient().NewContainerClient(loc.Container).NewBlockBlobClient(loc.Blob), loc: loc}
}

// Version is one version of the file: its content and the ETag the blob
// service gave it.
type Version struct {
	Data []byte
	ETag azcore.ETag
}

// ErrNotFound is returned by Read when there is no file at the location.
var ErrNotFound = errors.New("no connections file")

// ErrUnchanged is returned by Read when the file's ETag is still the one
// given.
var ErrUnchanged = errors.New("connections file unchanged")

// ConflictError is returned by Put when the file changed (or was created)
// since the version the write was based on.
type ConflictError struct {
	Location Location
	// Based is the ETag the write was based on, "" for a new file.
	Based azcore.ETag
}

func (e *ConflictError) Error() string {
	if e.Based == "" {
		return fmt.Sprintf("%s: the file was created by someone else meanwhile; read it again and reapply your change", e.Location)
	}
	return fmt.Sprintf("%s: the file changed since it was read (ETag %s); read it again and reapply your change", e.Location, e.Based)
}

// Read returns the file. With etag not empty it is a conditional read:
// ErrUnchanged when the file's ETag is still etag.
func (s *Store) Read(ctx context.Context, etag azcore.ETag) (Version, error) {
	var opts blob.DownloadStreamOptions
	if etag != "" {
		opts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: &etag}}
	}
	// The SDK counts 304 Not Modified as a success of DownloadStream
	// (azblob's internal/generated/zz_blob_client.go, BlobClient.Download,
	// accepts 200, 206 and 304), with an empty body:
	// the status is read from the raw response.
	var raw *http.Response
	resp, err := s.blob.DownloadStream(policy.WithCaptureResponse(ctx, &raw), &opts)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
			return Version{}, fmt.Errorf("%s: %w", s.loc, ErrNotFound)
		}
		return Version{}, fmt.Errorf("reading %s: %w", s.loc, err)
	}
	defer resp.Body.Close()
	if raw != nil && raw.StatusCode == http.StatusNotModified {
		return Version{}, ErrUnchanged
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxSize+1))
	if err != nil {
		return Version{}, fmt.Errorf("reading %s: %w", s.loc, err)
	}
	if len(data) > MaxSize {
		return Version{}, fmt.Errorf("%s: larger than %d bytes; a connections file is a few kilobytes", s.loc, MaxSize)
	}
	v := Version{Data: data}
	if resp.ETag != nil {
		v.ETag = *resp.ETag
	}
	return v, nil
}

// Put validates data and writes it over the version whose ETag is based
// (based "": only if there is no file yet). A file the validator refuses
// is not written: the error is its *config.ValidationError. A write based
// on a version that is no longer the file's is refused with a
// *ConflictError.
func (s *Store) Put(ctx context.Context, data []byte, based azcore.ETag) (azcore.ETag, error) {
	if _, err := config.ParseConnections(data); err != nil {
		return "", err
	}
	cond := &blob.ModifiedAccessConditions{IfMatch: &based}
	if based == "" {
		any := azcore.ETagAny
		cond = &blob.ModifiedAccessConditions{IfNoneMatch: &any}
	}
	contentType := "application/json"
	resp, err := s.blob.UploadBuffer(ctx, data, &blockblob.UploadBufferOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: cond},
		HTTPHeaders:      &blob.HTTPHeaders{BlobContentType: &contentType},
	})
	if err != nil {
		if bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobAlreadyExists) {
			return "", &ConflictError{Location: s.loc, Based: based}
		}
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return "", fmt.Errorf("%s: the container does not exist (the deployment creates it): %w", s.loc, err)
		}
		return "", fmt.Errorf("writing %s: %w", s.loc, err)
	}
	if resp.ETag == nil {
		return "", fmt.Errorf("writing %s: the blob service returned no ETag", s.loc)
	}
	return *resp.ETag, nil
}

// Watcher holds the last accepted version of the file and its connections,
// and refuses a change the validator refuses: the running set stays.
type Watcher struct {
	store *Store
	etag  azcore.ETag
	conns []broker.Connection
	// refused is the ETag of the last version refused, so that one bad
	// version is reported once, not at every poll.
	refused azcore.ETag
}

// NewWatcher returns a Watcher of store that has accepted nothing yet.
func NewWatcher(store *Store) *Watcher { return &Watcher{store: store} }

// Change is what Check found.
type Change struct {
	// Conns is the new set, nil when nothing changed or the change was
	// refused.
	Conns []broker.Connection
	ETag  azcore.ETag
	// Refused is the validator's verdict on a new version that was not
	// accepted; nil otherwise. It is reported once per version.
	Refused *config.ValidationError
}

// Check reads the file if it changed since the version last accepted (or
// refused) and validates it. An accepted version becomes the Watcher's;
// a refused one leaves the Watcher as it was. A read error leaves it as
// it was too.
func (w *Watcher) Check(ctx context.Context) (Change, error) {
	since := w.etag
	if w.refused != "" {
		since = w.refused
	}
	v, err := w.store.Read(ctx, since)
	if errors.Is(err, ErrUnchanged) {
		return Change{}, nil
	}
	if err != nil {
		return Change{}, err
	}
	if v.ETag == w.etag {
		return Change{}, nil
	}
	conns, err := config.ParseConnections(v.Data)
	if err != nil {
		var ve *config.ValidationError
		if !errors.As(err, &ve) {
			return Change{}, err
		}
		w.refused = v.ETag
		return Change{ETag: v.ETag, Refused: ve}, nil
	}
	w.etag, w.conns, w.refused = v.ETag, conns, ""
	return Change{Conns: conns, ETag: v.ETag}, nil
}

// Current returns the last accepted set and its ETag (nil and "" before
// the first).
func (w *Watcher) Current() ([]broker.Connection, azcore.ETag) { return w.conns, w.etag }
