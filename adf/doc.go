// Package adf is the Azure Data Factory kit for tokenrefresher: example
// pipelines (pipeline/), the datasets and linked services they use
// (dataset/, linkedService/), laid out as a factory's Git repository lays
// them out, and the guides README.md (using the kit) and MIGRATION.md
// (leaving the "refresh the token as the first step of every pipeline"
// pattern).
//
// There is no Go code to import here. The tests hold the kit to the
// handler's code: the token activity calls the route the Functions host
// exposes and the handler serves, reads the field the handler returns, keeps
// tokens and keys out of run history, and carries no secret; the guides
// document every status and error field the handler answers with.
package adf
