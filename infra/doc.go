// Package infra holds the Bicep templates that deploy tokenrefresher to an
// Azure Functions Flex Consumption plan (main.bicep and modules/), an
// example parameters file, and the tests that hold the templates against the
// handler's code: every setting the handler needs on Azure is set, the role
// definition GUIDs are the built-in ones, no secret has a default, the lock
// container is the one the handler uses, the refresh-failure alert queries
// what the handler actually logs and answers, every resource property is one
// Flex Consumption takes, every name derived from namePrefix is valid, and
// each route's authentication is what the README says.
//
// There is no Go code to import here; see README.md for what gets deployed
// and how.
package infra
