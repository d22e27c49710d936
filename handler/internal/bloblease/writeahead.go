package bloblease

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

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
//
// Sources: a lease locks the blob "for write and delete operations", and a
// write to a leased blob must carry the active lease id
// (learn.microsoft.com/rest/api/storageservices/lease-blob, and
// .../put-blob, "x-ms-lease-id ... required if the blob has an active
// lease"). That the lease survives the Put Blob (renew and release still
// work afterwards) is checked against Azurite in TestWriteAheadRecord, not
// against Azure itself.
var (
	_ broker.WriteAheadLog     = (*heldLock)(nil)
	_ broker.WriteAheadChecker = (*Locker)(nil)
	_ broker.AccessTokenLog    = (*heldLock)(nil)
	_ broker.BesideLockReader  = (*Locker)(nil)
)

// The content may instead be the connection's sealed access-token record
// (broker.AccessTokenLog, ACCESS_TOKEN_STORE=blob). The metadata value
// record=accesstoken says so, so that HasWriteAhead tells the two apart
// from the blob's properties alone (one HEAD, as before) and the sweep
// does not take every connection's lock to reconcile a record that is
// not a refresh token. Every write under the lease sets or drops it with
// the content it describes (put), and RecordStatus carries it along.
// Metadata names are matched case-insensitively (isRecordKey): they
// "preserve the case with which they were created, but are
// case-insensitive when set or read"
// (learn.microsoft.com/rest/api/storageservices/setting-and-retrieving-properties-and-metadata-for-blob-resources).
const (
	metaRecord       = "record"
	metaRecordAccess = "accesstoken"
)

func isRecordKey(k string) bool { return strings.EqualFold(k, metaRecord) }

// holdsAccessToken reports whether md says the content is an access-token
// record.
func holdsAccessToken(md map[string]*string) bool {
	for k, v := range md {
		if isRecordKey(k) && v != nil && strings.EqualFold(*v, metaRecordAccess) {
			return true
		}
	}
	return false
}

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
	data, err := readRecord(resp.Body)
	if err != nil {
		return nil, h.opError("read write-ahead record", err)
	}
	h.mu.Lock()
	h.meta, h.metaKnown = resp.Metadata, true
	h.mu.Unlock()
	return data, nil
}

// WriteAhead replaces the lock blob's content with rec, under the lease:
// one Put Blob, the only request between a provider's answer and the
// rotated refresh token being durable. The metadata it carries leaves out
// the redemption mark: the record settles the redemption the mark was
// for, in the same request.
func (h *heldLock) WriteAhead(ctx context.Context, rec []byte) error {
	return h.put(ctx, "write write-ahead record", rec, true, false)
}

// ClearWriteAhead empties the lock blob, under the lease. A redemption
// mark stays.
func (h *heldLock) ClearWriteAhead(ctx context.Context) error {
	return h.put(ctx, "clear write-ahead record", nil, false, false)
}

// KeepAccessToken replaces the lock blob's content with the sealed
// access-token record rec, under the lease: one Put Blob, the request
// that would otherwise have emptied a settled write-ahead record. A
// redemption mark stays.
func (h *heldLock) KeepAccessToken(ctx context.Context, rec []byte) error {
	return h.put(ctx, "keep access token", rec, false, true)
}

func (h *heldLock) put(ctx context.Context, op string, content []byte, settle, access bool) error {
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
	if settle {
		meta = withoutMark(meta)
	}
	meta = withRecordKind(meta, access)
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

// withRecordKind returns md (a copy when it changes) saying whether the
// content is an access-token record.
func withRecordKind(md map[string]*string, access bool) map[string]*string {
	if holdsAccessToken(md) == access && (access || !hasRecordKey(md)) {
		return md
	}
	out := make(map[string]*string, len(md)+1)
	for k, v := range md {
		if !isRecordKey(k) {
			out[k] = v
		}
	}
	if access {
		v := metaRecordAccess
		out[metaRecord] = &v
	}
	return out
}

func hasRecordKey(md map[string]*string) bool {
	for k := range md {
		if isRecordKey(k) {
			return true
		}
	}
	return false
}

// ReadBesideLock downloads the named lock's blob without taking the lock
// (no lease is needed to read a leased blob: Get Blob's x-ms-lease-id is
// optional, learn.microsoft.com/rest/api/storageservices/get-blob): the
// access-token record or a pending write-ahead record, nil when the blob
// is empty or does not exist. One Get Blob request.
func (l *Locker) ReadBesideLock(ctx context.Context, name string) ([]byte, error) {
	bn, err := blobName(name)
	if err != nil {
		return nil, err
	}
	resp, err := l.container.NewBlobClient(bn).DownloadStream(ctx, nil)
	if err != nil {
		if blobMissing(err) {
			return nil, nil
		}
		return nil, newError("read access token", name, l.containerName, err)
	}
	defer resp.Body.Close()
	data, err := readRecord(resp.Body)
	if err != nil {
		return nil, newError("read access token", name, l.containerName, err)
	}
	return data, nil
}

// blobMissing reports whether err says the blob or its container does not
// exist.
func blobMissing(err error) bool {
	var re *azcore.ResponseError
	return bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) ||
		errors.As(err, &re) && re.StatusCode == 404
}

// readRecord reads a lock blob's content: nil when empty, an error when it
// is larger than a record can be.
func readRecord(body io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(body, maxRecord+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxRecord {
		return nil, fmt.Errorf("the lock blob holds %d bytes or more, not a record", maxRecord)
	}
	if len(data) == 0 {
		return nil, nil
	}
	return data, nil
}

// HasWriteAhead reports whether the named lock's blob has content that is
// a write-ahead record (not an access-token record), without taking the
// lock: one HEAD request.
func (l *Locker) HasWriteAhead(ctx context.Context, name string) (bool, error) {
	bn, err := blobName(name)
	if err != nil {
		return false, err
	}
	props, err := l.container.NewBlobClient(bn).GetProperties(ctx, nil)
	if err != nil {
		if blobMissing(err) {
			return false, nil
		}
		return false, newError("check write-ahead record", name, l.containerName, err)
	}
	return props.ContentLength != nil && *props.ContentLength > 0 && !holdsAccessToken(props.Metadata), nil
}

// A held lock is a broker.RedemptionMarker: the mark is three metadata
// values of the lock blob beside the recorded status, written under the
// lease with Set Blob Metadata (which replaces the metadata as a whole, so
// every write carries the rest along). The mark holds a hash prefix of
// the refresh token, never the token.
var _ broker.RedemptionMarker = (*heldLock)(nil)

// Metadata names of the redemption mark (lower case: see status.go).
const (
	metaRedeeming   = "redeeming"
	metaRedeemingBy = "redeemingby"
	metaRedeemingAt = "redeemingat"
)

func isMarkKey(k string) bool {
	return strings.EqualFold(k, metaRedeeming) || strings.EqualFold(k, metaRedeemingBy) || strings.EqualFold(k, metaRedeemingAt)
}

// withoutMark returns md without the redemption mark (md itself when it
// has none).
func withoutMark(md map[string]*string) map[string]*string {
	has := false
	for k := range md {
		has = has || isMarkKey(k)
	}
	if !has {
		return md
	}
	out := make(map[string]*string, len(md))
	for k, v := range md {
		if !isMarkKey(k) {
			out[k] = v
		}
	}
	return out
}

// markOf returns the mark in md; ok is false when md has none.
func markOf(md map[string]*string) (broker.Redemption, bool) {
	var r broker.Redemption
	for k, v := range md {
		if v == nil {
			continue
		}
		switch {
		case strings.EqualFold(k, metaRedeeming):
			r.Token = *v
		case strings.EqualFold(k, metaRedeemingBy):
			r.Instance = *v
		case strings.EqualFold(k, metaRedeemingAt):
			r.At = parseTime(*v)
		}
	}
	return r, r.Token != ""
}

// metadata returns the blob's metadata as last read or written under this
// lease, reading it (one HEAD under the lease) when it is not known yet.
func (h *heldLock) metadata(ctx context.Context, op string) (map[string]*string, error) {
	h.mu.Lock()
	meta, known := h.meta, h.metaKnown
	h.mu.Unlock()
	if known {
		return meta, nil
	}
	props, err := h.blob.GetProperties(ctx, &blob.GetPropertiesOptions{AccessConditions: h.leaseConditions()})
	if err != nil {
		return nil, h.opError(op, err)
	}
	h.mu.Lock()
	h.meta, h.metaKnown = props.Metadata, true
	h.mu.Unlock()
	return props.Metadata, nil
}

// setMetadata replaces the blob's metadata with md, under the lease.
func (h *heldLock) setMetadata(ctx context.Context, op string, md map[string]*string) error {
	if h.isReleased() {
		return &Error{Op: op, Name: h.name, Container: h.l.containerName, NotHeld: true, Err: errReleased}
	}
	if _, err := h.blob.SetMetadata(ctx, md, &blob.SetMetadataOptions{AccessConditions: h.leaseConditions()}); err != nil {
		return h.opError(op, err)
	}
	h.mu.Lock()
	h.meta, h.metaKnown = md, true
	h.mu.Unlock()
	return nil
}

// PendingRedemption returns the mark in the lock blob's metadata. The
// metadata was read with the write-ahead record under this lease, so this
// costs no request in the broker's order of calls.
func (h *heldLock) PendingRedemption(ctx context.Context) (broker.Redemption, bool, error) {
	if h.isReleased() {
		return broker.Redemption{}, false, &Error{Op: "read redemption mark", Name: h.name, Container: h.l.containerName, NotHeld: true, Err: errReleased}
	}
	md, err := h.metadata(ctx, "read redemption mark")
	if err != nil {
		return broker.Redemption{}, false, err
	}
	r, ok := markOf(md)
	return r, ok, nil
}

// MarkRedemption writes r into the lock blob's metadata, under the lease:
// one Set Blob Metadata request, durable when it returns.
func (h *heldLock) MarkRedemption(ctx context.Context, r broker.Redemption) error {
	md, err := h.metadata(ctx, "write redemption mark")
	if err != nil {
		return err
	}
	out := make(map[string]*string, len(md)+3)
	for k, v := range withoutMark(md) {
		out[k] = v
	}
	put := func(k, v string) { out[k] = &v }
	put(metaRedeeming, sanitize(r.Token, 64))
	if inst := sanitize(r.Instance, maxInstance); inst != "" {
		put(metaRedeemingBy, inst)
	}
	put(metaRedeemingAt, formatTime(r.At))
	return h.setMetadata(ctx, "write redemption mark", out)
}

// ClearRedemption removes the mark from the lock blob's metadata; no
// request when there is none (the write-ahead record's write removed it).
func (h *heldLock) ClearRedemption(ctx context.Context) error {
	md, err := h.metadata(ctx, "clear redemption mark")
	if err != nil {
		return err
	}
	if _, ok := markOf(md); !ok {
		return nil
	}
	return h.setMetadata(ctx, "clear redemption mark", withoutMark(md))
}
