// Package aempkg owns the metadata of AEM content packages: reading
// META-INF/vault/properties.xml and META-INF/vault/filter.xml out of a
// package zip, the package identity (group:name:version), FileVault's
// version ordering, version ranges and dependency references, and the
// install order of a set of packages.
//
// The behaviour follows Apache Jackrabbit FileVault (the library behind the
// AEM CRX Package Manager) wherever FileVault defines it; every place where
// this package deliberately differs, or had to choose between FileVault
// releases, says so in the comment of the function concerned. In short:
//
//   - Version ordering is Maven's ComparableVersion as embedded in FileVault
//     since 3.7.0 (JCRVLT-672), not the older segment comparison.
//   - Parsing is stricter than FileVault: input FileVault would silently turn
//     into nonsense (a range without a closing bracket, a name with a comma)
//     is rejected with an error that names the offending text, because a
//     deployment system must not guess.
//
// Nothing here talks to AEM; the package is pure and safe for concurrent use.
package aempkg
