package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Store is a broker.SecretStore in a directory: one file per secret, at
// <dir>/secrets/<name>.json. Writes replace the file atomically (temporary
// file, fsync, rename, fsync of the directory), so a reader in any process
// sees either the old value or the new one, and a value Set has returned
// survives a crash. A Store is safe for concurrent use; concurrent Sets of
// one name leave one of the values, whole.
type Store struct {
	dir string
}

var _ broker.SecretStore = (*Store)(nil)
var _ broker.SecretLister = (*Store)(nil)

// secretFile is the on-disk form. The value is a plain JSON string rather
// than base64: the file is already 0600 in a 0700 directory, base64 would
// protect nothing, and a readable file lets an operator check or fix a
// value by hand. Key Vault also stores strings, so a value that fits one
// store fits the other.
type secretFile struct {
	Value     string    `json:"value"`
	ExpiresOn time.Time `json:"expiresOn,omitzero"`
	UpdatedOn time.Time `json:"updatedOn,omitzero"`
	// IssuedOn and LifetimeSeconds: when the provider issued an access
	// token, and for how long (broker.StoredSecret).
	IssuedOn        time.Time `json:"issuedOn,omitzero"`
	LifetimeSeconds int64     `json:"lifetimeSeconds,omitempty"`
}

// secretFileIn decodes the on-disk form. Value is a pointer so that a file
// without one is an error rather than an empty secret; the times are
// strings so that a bad one can be blamed on its field.
type secretFileIn struct {
	Value           *string `json:"value"`
	ExpiresOn       string  `json:"expiresOn"`
	UpdatedOn       string  `json:"updatedOn"`
	IssuedOn        string  `json:"issuedOn"`
	LifetimeSeconds int64   `json:"lifetimeSeconds"`
}

// SecretInfo is what List tells about a secret: everything but the value.
// Names are in lower case (names are case-insensitive, as in Key Vault).
type SecretInfo = broker.SecretInfo

// CorruptFileError reports a secret file that exists but cannot be decoded:
// not JSON, cut short, or with a missing or mistyped field. It names the
// file and the place, never the content, which may be a token.
type CorruptFileError struct {
	Path string
	// Field is the offending field; empty when the file as a whole is not a
	// JSON object.
	Field string
	// Offset is where decoding stopped in malformed JSON; -1 when the JSON
	// is well formed and Field is to blame.
	Offset int64
}

func (e *CorruptFileError) Error() string {
	var why string
	switch {
	case e.Offset >= 0:
		why = fmt.Sprintf("malformed JSON near byte %d", e.Offset)
	case e.Field == "":
		why = "not a JSON object"
	default:
		why = fmt.Sprintf("field %q is missing or invalid", e.Field)
	}
	return fmt.Sprintf("local: secret file %s is corrupt: %s; write the secret again to replace it", e.Path, why)
}

// NewStore returns a Store keeping its files under dir/secrets. It creates
// dir (0700) if it is missing, and secrets/ (always set to 0700).
func NewStore(dir string) (*Store, error) {
	p, err := prepareDir(dir, "secrets")
	if err != nil {
		return nil, err
	}
	return &Store{dir: p}, nil
}

// Dir returns the directory holding the secret files.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(name string) string { return filepath.Join(s.dir, fileName(name, ".json")) }

// Get returns the named secret. A secret that was never set gives an error
// wrapping broker.ErrSecretNotFound; a name that breaks the naming rules
// gives a *NameError, and an undecodable file a *CorruptFileError.
func (s *Store) Get(ctx context.Context, name string) (broker.StoredSecret, error) {
	if err := ctx.Err(); err != nil {
		return broker.StoredSecret{}, err
	}
	if err := ValidateName(name); err != nil {
		return broker.StoredSecret{}, err
	}
	p := s.path(name)
	data, err := os.ReadFile(p) // #nosec G304 -- the store's directory plus a name ValidateName checked just above
	if errors.Is(err, fs.ErrNotExist) {
		return broker.StoredSecret{}, fmt.Errorf("local: secret %q: %w", name, broker.ErrSecretNotFound)
	}
	if err != nil {
		return broker.StoredSecret{}, fmt.Errorf("local: reading secret %q: %w", name, err)
	}
	return decode(p, data)
}

// Set writes the named secret, replacing any earlier value, and returns
// once it is durable. A zero UpdatedOn is recorded as now. The value must be
// valid UTF-8: JSON strings cannot carry anything else unchanged.
func (s *Store) Set(ctx context.Context, name string, v broker.StoredSecret) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	if !utf8.ValidString(v.Value.Reveal()) {
		return fmt.Errorf("local: secret %q: value is not valid UTF-8", name)
	}
	if v.UpdatedOn.IsZero() {
		v.UpdatedOn = time.Now()
	}
	data, err := json.MarshalIndent(secretFile{
		// The file is where the value must go: it leaves the process here.
		Value:           v.Value.Reveal(),
		ExpiresOn:       v.ExpiresOn.UTC(),
		UpdatedOn:       v.UpdatedOn.UTC(),
		IssuedOn:        v.IssuedOn.UTC(),
		LifetimeSeconds: int64(v.Lifetime / time.Second),
	}, "", "  ")
	if err != nil {
		// Only a time outside years 0-9999 gets here; the message names it,
		// not the value.
		return fmt.Errorf("local: secret %q: %w", name, err)
	}
	if err := writeFileAtomic(s.path(name), append(data, '\n')); err != nil {
		return fmt.Errorf("local: writing secret %q: %w", name, err)
	}
	return nil
}

// List returns the name, expiry and update time of every secret, sorted by
// name. Like os.ReadDir, it returns what it could read along with an error
// (one *CorruptFileError per undecodable file, joined), so one bad file
// does not hide the others. Files that are not secrets (temporary files,
// names breaking the rules) are skipped.
func (s *Store) List(ctx context.Context) ([]SecretInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("local: listing secrets: %w", err)
	}
	var infos []SecretInfo
	var errs []error
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() || ValidateName(name) != nil || name != strings.ToLower(name) {
			continue
		}
		p := filepath.Join(s.dir, e.Name())
		data, err := os.ReadFile(p) // #nosec G304 -- an entry of the store's own directory whose name ValidateName accepted
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("local: reading secret %q: %w", name, err))
			continue
		}
		v, err := decode(p, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		infos = append(infos, SecretInfo{Name: name, ExpiresOn: v.ExpiresOn, UpdatedOn: v.UpdatedOn})
	}
	return infos, errors.Join(errs...)
}

// decode parses a secret file. Its errors come from the decoder's position
// and field, never from its message: encoding/json quotes offending input
// ("invalid character 'x'", "number 12345"), and that input may be a token.
func decode(path string, data []byte) (broker.StoredSecret, error) {
	var in secretFileIn
	if err := json.Unmarshal(data, &in); err != nil {
		cerr := &CorruptFileError{Path: path, Offset: -1}
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			cerr.Offset = syn.Offset
		case errors.As(err, &typ):
			cerr.Field = typ.Field
		default:
			cerr.Offset = 0
		}
		return broker.StoredSecret{}, cerr
	}
	if in.Value == nil {
		return broker.StoredSecret{}, &CorruptFileError{Path: path, Field: "value", Offset: -1}
	}
	if in.LifetimeSeconds < 0 {
		return broker.StoredSecret{}, &CorruptFileError{Path: path, Field: "lifetimeSeconds", Offset: -1}
	}
	out := broker.StoredSecret{Value: broker.Secret(*in.Value), Lifetime: time.Duration(in.LifetimeSeconds) * time.Second}
	for _, f := range []struct {
		name string
		text string
		dst  *time.Time
	}{{"expiresOn", in.ExpiresOn, &out.ExpiresOn}, {"updatedOn", in.UpdatedOn, &out.UpdatedOn}, {"issuedOn", in.IssuedOn, &out.IssuedOn}} {
		if f.text == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, f.text)
		if err != nil {
			return broker.StoredSecret{}, &CorruptFileError{Path: path, Field: f.name, Offset: -1}
		}
		*f.dst = t
	}
	return out, nil
}

// writeFileAtomic replaces path with data so that no reader ever sees a
// partial file, and the new content survives a crash once it returns.
func writeFileAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	// The leading dot and the suffix keep List from mistaking a temporary
	// file, even one a crash left behind, for a secret.
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			// The write already failed with err; cleaning up can only
			// fail less informatively.
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp asks for 0600, but the umask can take bits away; set it
	// outright.
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable. Windows has no way to fsync a
// directory (NTFS journals the rename), so there it does nothing.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir) // #nosec G304 -- the store's own directory, to fsync it
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close() // Sync's error is the one to report
		return err
	}
	return d.Close()
}
