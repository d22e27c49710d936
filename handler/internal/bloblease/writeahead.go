package bloblease

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// A held lock is a broker.WriteAheadLog: the record is the lock blob's
// content, empty when there is none. Every write carries the lease id, so
// the blob service accepts it only while this lock holds the lease: a
// holder that lost its lease cannot overwrite its successor's record.
// Writing a blob's content is one Put Blob request, the fastest durable
// write the service has; it replaces the blob's metadata too, so the
// write carries the recorded status (metadata) along, as last read or
// written under this lease. The record never goes into metadata: metadata
// is readable with the blob's properties and shows in logs and tools.
var (
	_ broker.WriteAheadLog     = (*heldLock)(nil)
	_ broker.WriteAheadChecker = (*Locker)(nil)
)

// maxRecord bounds what ReadWriteAhead reads: a sealed record is a few
// hundred bytes.
const maxRecord = 64 << 10

func (h *heldLock) leaseConditions() *blob.AccessConditions {
	return &blob.AccessConditions{LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: h.lease.LeaseID()}}
}

// opError is an *Error for op on this lock, NotHeld when the service says
// the lease is not ours.
func (h *heldLock) opError(op string, err error) *Error {
	e := newError(op, h.name, h.l.containerName, err)
	e.NotHeld = notHeld(err)
	return e
}

// ReadWriteAhead downloads the lock blob, under the lease, and returns its
// content (nil when empty). It also keeps the blob's metadata for the next
// write.
func (h *heldLock) ReadWriteAhead(ctx context.Context) ([]byte, error) {
	if h.isReleased() {
		return nil, &Error{Op: "read write-ahead record", Name: h.name, Container: h.l.containerName, NotHeld: true, Err: errReleased}
	}
	resp, err := h.blob.DownloadStream(ctx, &blob.DownloadStreamOptions{AccessConditions: h.leaseConditions()})
	if err != nil {
		return nil, h.opError("read write-ahead record", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRecord+1))
	if err != nil {
		return nil, h.opError("read write-ahead record", err)
	}
	if len(data) > maxRecord {
		return nil, h.opError("read write-ahead record", fmt.Errorf("the lock blob holds %d bytes or more, not a record", maxRecord))
	}
	h.mu.Lock()
	h.meta, h.metaKnown = resp.Metadata, true
	h.mu.Unlock()
	if len(data) == 0 {
		return nil, nil
	}
	return data, nil
}

// WriteAhead replaces the lock blob's content with rec, under the lease.
func (h *heldLock) WriteAhead(ctx context.Context, rec []byte) error {
	return h.put(ctx, "write write-ahead record", rec)
}

// ClearWriteAhead empties the lock blob, under the lease.
func (h *heldLock) ClearWriteAhead(ctx context.Context) error {
	return h.put(ctx, "clear write-ahead record", nil)
}

func (h *heldLock) put(ctx context.Context, op string, content []byte) error {
	if h.isReleased() {
		return &Error{Op: op, Name: h.name, Container: h.l.containerName, NotHeld: true, Err: errReleased}
	}
	h.mu.Lock()
	meta, known := h.meta, h.metaKnown
	h.mu.Unlock()
	if !known {
		props, err := h.blob.GetProperties(ctx, &blob.GetPropertiesOptions{AccessConditions: h.leaseConditions()})
		if err != nil {
			return h.opError(op, err)
		}
		meta = props.Metadata
	}
	_, err := h.block.Upload(ctx, streaming.NopCloser(bytes.NewReader(content)), &blockblob.UploadOptions{
		Metadata:         meta,
		AccessConditions: h.leaseConditions(),
	})
	if err != nil {
		return h.opError(op, err)
	}
	h.mu.Lock()
	h.meta, h.metaKnown = meta, true
	h.mu.Unlock()
	return nil
}

// HasWriteAhead reports whether the named lock's blob has content (a
// write-ahead record), without taking the lock: one HEAD request.
func (l *Locker) HasWriteAhead(ctx context.Context, name string) (bool, error) {
	bn, err := blobName(name)
	if err != nil {
		return false, err
	}
	props, err := l.container.NewBlobClient(bn).GetProperties(ctx, nil)
	if err != nil {
		var re *azcore.ResponseError
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) ||
			errors.As(err, &re) && re.StatusCode == 404 {
			return false, nil
		}
		return false, newError("check write-ahead record", name, l.containerName, err)
	}
	return props.ContentLength != nil && *props.ContentLength > 0, nil
}
