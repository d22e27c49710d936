// Package config reads what the handler is told: settings from the
// environment (LoadSettings), the connections it serves (ParseConnections,
// Settings.ReadConnections) and what it knows about providers (Presets).
//
// Everything here fails in full: a bad environment or connections file
// yields one error listing every problem, each saying where it is, what was
// found and what is allowed, so an operator fixes it in one round rather
// than one restart per typo. No message repeats a value that may be a
// secret.
package config
