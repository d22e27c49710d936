package logsplit

// A port of how the Azure Functions host turns a custom handler's output
// into Application Insights traces, for the tests of this package. Every
// rule cites the code it ports; azure-functions-host is at commit 89dc438d
// (Oct 2024), the WebJobs SDK's Application Insights logger is
// Azure/azure-webjobs-sdk src/Microsoft.Azure.WebJobs.Logging.ApplicationInsights.

import (
	"strings"
	"unicode"
)

// Stream is the worker output a line was read from.
type Stream int

const (
	Stdout Stream = iota
	Stderr
)

// LogLevel is Microsoft.Extensions.Logging.LogLevel.
type LogLevel int

const (
	LevelTrace LogLevel = iota
	LevelDebug
	LevelInformation
	LevelWarning
	LevelError
	LevelCritical
)

func (l LogLevel) String() string {
	return [...]string{"Trace", "Debug", "Information", "Warning", "Error", "Critical"}[l]
}

const (
	// consoleLogPrefix is WorkerConstants.LanguageWorkerConsoleLogPrefix: a
	// line starting with it goes to the worker process's own logger
	// (WorkerProcess.BuildAndLogConsoleLog).
	consoleLogPrefix = "LanguageWorkerConsoleLog"
	// toolingPrefix is WorkerConstants.ToolingConsoleLogPrefix, for Core
	// Tools (category Host.Function.ToolingConsoleLog).
	toolingPrefix = "azfuncjsonlog:"
	// ConsoleCategory is WorkerConstants.ConsoleLogCategoryName, the
	// category WorkerConsoleLogService logs every other line under.
	ConsoleCategory = "Host.Function.Console"
)

// HostLevel is the level the host logs one line of worker output at:
// WorkerProcess.OnOutputDataReceived (stdout: Information) and
// WorkerProcess.ParseErrorMessageAndLog (stderr). stdErrForErrorsOnly is the
// worker description's UseStdErrorStreamForErrorsOnly, true for custom
// handlers (HttpWorkerDescription) and passed to WorkerProcess by
// HttpWorkerProcess's constructor.
func HostLevel(s Stream, line string, stdErrForErrorsOnly bool) LogLevel {
	if s == Stdout {
		return LevelInformation
	}
	switch {
	case containsFold(line, "warn"):
		return LevelWarning
	case stdErrForErrorsOnly:
		return LevelError
	case containsFold(line, "error"), containsFold(line, "fail"), containsFold(line, "severe"),
		containsFold(line, "unhandled exception"):
		return LevelError
	default:
		return LevelInformation
	}
}

// containsFold is .NET's IndexOf(value, StringComparison.OrdinalIgnoreCase)
// > -1: both sides upper-cased rune by rune (simple case mapping).
func containsFold(s, substr string) bool {
	return strings.Contains(strings.Map(unicode.ToUpper, s), strings.Map(unicode.ToUpper, substr))
}

// Category is the logger category the host writes a line under
// (WorkerProcess.BuildAndLogConsoleLog): the worker process logger
// (HttpWorkerProcessFactory: "Worker.HttpWorkerProcess.{workerId}") for
// prefixed lines, the Core Tools logger for tooling lines, and
// WorkerConsoleLogService's Host.Function.Console for the rest.
func Category(line string) string {
	switch {
	case hasPrefixFold(line, consoleLogPrefix):
		return "Worker.HttpWorkerProcess.<workerId>"
	case hasPrefixFold(line, toolingPrefix):
		return "Host.Function.ToolingConsoleLog"
	default:
		return ConsoleCategory
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// Lines splits a stream as System.Diagnostics.AsyncStreamReader
// (MoveLinesFromStringBuilderToMessageQueue, dotnet/runtime) does for
// Process.BeginOutputReadLine/BeginErrorReadLine: "\r", "\n" and "\r\n" end
// a line; a last line without an end is delivered at EOF.
func Lines(stream string) []string {
	var lines []string
	start := 0
	for i := 0; i < len(stream); i++ {
		if c := stream[i]; c == '\r' || c == '\n' {
			lines = append(lines, stream[start:i])
			if c == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
				i++
			}
			start = i + 1
		}
	}
	if start < len(stream) {
		lines = append(lines, stream[start:])
	}
	return lines
}

// Trace is one row of the Application Insights traces table, as far as the
// alert queries read it.
type Trace struct {
	Message          string            `json:"message"`
	SeverityLevel    int               `json:"severityLevel"`
	CustomDimensions map[string]string `json:"customDimensions"`
	OperationName    string            `json:"operation_Name"`
}

// TraceOf is the traces row for one line of worker output.
//   - message: WorkerConsoleLogService.ProcessLogs calls
//     _logger.Log(level, message) with no arguments, so the formatted
//     message is the line itself; ApplicationInsightsLogger.LogTrace makes
//     it the TraceTelemetry's message.
//   - severityLevel: ApplicationInsightsLogger.GetSeverityLevel
//     (Debug/Trace 0, Information 1, Warning 2, Error 3, Critical 4).
//   - customDimensions.Category and .LogLevel: WebJobsTelemetryInitializer
//     copies them from the scope ApplicationInsightsLogger.Log opens.
//   - operation_Name: empty, for the lines are logged by a background
//     service, outside any invocation's scope.
func TraceOf(s Stream, line string) Trace {
	level := HostLevel(s, line, true)
	msg := line
	if hasPrefixFold(line, consoleLogPrefix) {
		msg = line[len(consoleLogPrefix):] // WorkerProcessUtilities.RemoveLogPrefix
	}
	return Trace{
		Message:          msg,
		SeverityLevel:    severity(level),
		CustomDimensions: map[string]string{"Category": Category(line), "LogLevel": level.String()},
	}
}

func severity(l LogLevel) int {
	switch l {
	case LevelTrace, LevelDebug:
		return 0
	case LevelInformation:
		return 1
	case LevelWarning:
		return 2
	case LevelError:
		return 3
	default:
		return 4
	}
}
