package aempkg

// Text encodings, so Versions, IDs, ranges and dependencies read and write
// as their usual strings in JSON, YAML and as map keys ("g:n:1.0" rather
// than an object), and decoding validates them.

// MarshalText returns the version string.
func (v Version) MarshalText() ([]byte, error) { return []byte(v.s), nil }

// UnmarshalText parses a version; empty text is the empty version.
func (v *Version) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*v = Version{}
		return nil
	}
	p, err := ParseVersion(string(b))
	if err != nil {
		return err
	}
	*v = p
	return nil
}

// MarshalText returns group:name:version.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText parses group:name:version.
func (id *ID) UnmarshalText(b []byte) error {
	p, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// MarshalText returns the range as String does.
func (r VersionRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a range.
func (r *VersionRange) UnmarshalText(b []byte) error {
	p, err := ParseRange(string(b))
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// MarshalText returns the dependency as String does.
func (d Dependency) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses one dependency.
func (d *Dependency) UnmarshalText(b []byte) error {
	p, err := ParseDependency(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}
