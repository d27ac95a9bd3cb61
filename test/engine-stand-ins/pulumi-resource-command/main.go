// STAND-IN for pulumi-resource-command 1.2.1 (github.com/pulumi/pulumi-command/provider, commit
// 7f3eb6f3b77cd0fa3895ba437a695dd393f7dd25).
//
// The module proxy reachable here refuses that module, so this is our own provider with the same
// package name, version and resource tokens, implementing only what runner-fleet uses:
// command:local:Command and command:remote:Command. It follows the upstream sources (rows in
// docs/upstream.md):
//
//   - inputs triggers, create, update, delete, stdin, logging, interpreter, dir, environment,
//     addPreviousOutputInEnv; outputs are the inputs plus stdout and stderr
//     (provider/pkg/provider/local/base.go, common/inputs.go);
//
//   - a change to triggers replaces the resource, any other input change updates it
//     (`provider:"replaceOnChanges"` on Triggers only);
//
//   - Create runs `create`; Update runs `update`, or `create` when there is no `update`; Delete
//     runs `delete`; nothing runs in a preview (local/commandController.go);
//
//   - in a preview, stdout/stderr are unknown on create, and on update when any input changed or is
//     unknown (pulumi-go-provider infer/resource.go markComputed);
//
//   - commands run under `/bin/sh -c` (or interpreter) in dir (default: the provider's cwd, which
//     is the program directory), with the previous stdout/stderr in PULUMI_COMMAND_STDOUT/STDERR
//     unless addPreviousOutputInEnv is false; stdout and stderr lose one trailing newline; a
//     failure reports `<err>: running "<command>":\n<output>` (local/commandOutputs.go);
//
//   - logging (default stdoutAndStderr) decides which output lines go to the engine as status
//     messages (local/logging.go, util/util.go LogOutput).
//
//   - remote (remote/connection.go, commandOutputs.go): SSH to connection.host:port (22) as user
//     (root) with privateKey, password and the agent at agentSocketPath or SSH_AUTH_SOCK; the host
//     key is checked only when connection.hostKey is set; dialing is retried with backoff up to
//     dialErrorLimit (10; -1 unlimited) failures of perDialTimeout (15 s) each; environment goes
//     through SSH setenv (AcceptEnv), PULUMI_COMMAND_STDOUT/STDERR optimistically;
//
//   - a custom timeout bounds the whole operation (pulumi-go-provider middleware/cancel).
//
// Not implemented: assetPaths, archivePaths, connection.proxy, CopyToRemote, invokes.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"

	"runner-fleet/test/engine-stand-ins/internal/serve"
)

const (
	localType  = "command:local:Command"
	remoteType = "command:remote:Command"
)

// Version is stamped by `npm run engine` to the @pulumi/command version in package.json.
var Version = "1.2.1"

var inputKeys = map[string][]string{
	localType: {"triggers", "create", "update", "delete", "stdin", "logging", "interpreter", "dir",
		"environment", "assetPaths", "archivePaths", "addPreviousOutputInEnv"},
	remoteType: {"triggers", "create", "update", "delete", "stdin", "logging", "connection",
		"environment", "addPreviousOutputInEnv"},
}

type provider struct {
	serve.Base
}

func main() { serve.Provider(&provider{Base: serve.Base{Version: Version}}) }

func (p *provider) DiffConfig(context.Context, plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	return plugin.DiffResult{Changes: plugin.DiffNone}, nil
}

func (p *provider) Configure(context.Context, plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	return plugin.ConfigureResponse{}, nil
}

func (p *provider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	if _, ok := inputKeys[string(req.Type)]; !ok {
		return plugin.CheckResponse{}, fmt.Errorf("stand-in command provider: unsupported type %s", req.Type)
	}
	var failures []plugin.CheckFailure
	if conn := serve.Plain(req.News["connection"]); conn.IsObject() && !serve.Plain(conn.ObjectValue()["proxy"]).IsNull() {
		failures = append(failures, plugin.CheckFailure{Property: "connection.proxy",
			Reason: "not implemented by the runner-fleet stand-in command provider"})
	}
	for _, k := range []string{"assetPaths", "archivePaths"} {
		if v, ok := req.News[resource.PropertyKey(k)]; ok && !v.IsNull() {
			failures = append(failures, plugin.CheckFailure{Property: resource.PropertyKey(k),
				Reason: "not implemented by the runner-fleet stand-in command provider"})
		}
	}
	if l, ok := serve.Str(req.News, "logging"); ok {
		switch l {
		case "stdout", "stderr", "stdoutAndStderr", "none":
		default:
			failures = append(failures, plugin.CheckFailure{Property: "logging",
				Reason: "must be one of stdout, stderr, stdoutAndStderr, none"})
		}
	}
	return plugin.CheckResponse{Properties: req.News, Failures: failures}, nil
}

func (p *provider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	return serve.Diff(req.OldInputs, req.NewInputs, inputKeys[string(req.Type)], map[string]bool{"triggers": true}), nil
}

func (p *provider) Create(ctx context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	id, err := resource.NewUniqueHexID(req.Name+"-", 8, 0)
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	state := req.Properties.Copy()
	if req.Preview {
		state["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
		state["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
		return plugin.CreateResponse{ID: id, Properties: state}, nil
	}
	state["stdout"], state["stderr"] = resource.NewStringProperty(""), resource.NewStringProperty("")
	if create, ok := serve.Str(req.Properties, "create"); ok {
		ctx, cancel := withTimeout(ctx, req.Timeout)
		defer cancel()
		err = runFor(req.Type)(ctx, req.URN, create, req.Properties, state)
	}
	if err != nil {
		// The resource exists only when the command succeeded; report the failure with no ID so
		// the engine does not record it.
		return plugin.CreateResponse{}, err
	}
	return plugin.CreateResponse{ID: id, Properties: state}, nil
}

func (p *provider) Read(_ context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	return plugin.ReadResponse{ReadResult: plugin.ReadResult{ID: req.ID, Inputs: req.Inputs, Outputs: req.State}}, nil
}

func (p *provider) Update(ctx context.Context, req plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	state := req.NewInputs.Copy()
	state["stdout"], state["stderr"] = req.OldOutputs["stdout"], req.OldOutputs["stderr"]
	if req.Preview {
		// As infer's markComputed: an output is unknown in a preview when an input it depends on
		// (all of them) is unknown or changed.
		changed := serve.Diff(req.OldInputs, req.NewInputs, inputKeys[string(req.Type)], nil).Changes == plugin.DiffSome
		if changed || serve.AnyUnknown(req.NewInputs) {
			state["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
			state["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
		}
		return plugin.UpdateResponse{Properties: state}, nil
	}
	cmd, ok := serve.Str(req.NewInputs, "update")
	if !ok {
		cmd, ok = serve.Str(req.NewInputs, "create")
	}
	if ok {
		ctx, cancel := withTimeout(ctx, req.Timeout)
		defer cancel()
		if err := runFor(req.Type)(ctx, req.URN, cmd, req.NewInputs, state); err != nil {
			return plugin.UpdateResponse{}, err
		}
	}
	return plugin.UpdateResponse{Properties: state}, nil
}

func (p *provider) Delete(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	if del, ok := serve.Str(req.Outputs, "delete"); ok {
		state := req.Outputs.Copy()
		ctx, cancel := withTimeout(ctx, req.Timeout)
		defer cancel()
		return plugin.DeleteResponse{}, runFor(req.Type)(ctx, req.URN, del, req.Outputs, state)
	}
	return plugin.DeleteResponse{}, nil
}

func withTimeout(ctx context.Context, seconds float64) (context.Context, context.CancelFunc) {
	if seconds > 0 {
		return context.WithTimeout(ctx, time.Duration(seconds*float64(time.Second)))
	}
	return context.WithCancel(ctx)
}

type runner func(ctx context.Context, urn resource.URN, command string, in, state resource.PropertyMap) error

func runFor(t tokens.Type) runner {
	if t == remoteType {
		return runRemote
	}
	return runLocal
}

// output captures a command's stdout and stderr, sends what `logging` allows to the engine line
// by line as status messages (upstream util.LogOutput: InfoStatus), and stores them in state.
type output struct {
	stdout, stderr, both bytes.Buffer
	outW, errW           io.Writer
	log                  *lineLogger
}

// lineLogger sends each complete line written to it to the engine.
type lineLogger struct {
	mu      sync.Mutex
	ctx     context.Context
	urn     resource.URN
	pending []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = append(l.pending, b...)
	for {
		i := bytes.IndexByte(l.pending, '\n')
		if i < 0 {
			return len(b), nil
		}
		serve.Log(l.ctx, pulumirpc.LogSeverity_INFO, l.urn, string(l.pending[:i]), true)
		l.pending = l.pending[i+1:]
	}
}

func (l *lineLogger) flush() {
	if len(l.pending) > 0 {
		serve.Log(l.ctx, pulumirpc.LogSeverity_INFO, l.urn, string(l.pending), true)
		l.pending = nil
	}
}

func newOutput(ctx context.Context, urn resource.URN, in resource.PropertyMap) *output {
	logging, ok := serve.Str(in, "logging")
	if !ok {
		logging = "stdoutAndStderr"
	}
	o := &output{log: &lineLogger{ctx: ctx, urn: urn}}
	outs := []io.Writer{&o.stdout, &o.both}
	errs := []io.Writer{&o.stderr, &o.both}
	if logging == "stdout" || logging == "stdoutAndStderr" {
		outs = append(outs, o.log)
	}
	if logging == "stderr" || logging == "stdoutAndStderr" {
		errs = append(errs, o.log)
	}
	o.outW, o.errW = io.MultiWriter(outs...), io.MultiWriter(errs...)
	return o
}

func (o *output) finish(err error, command string, in, state resource.PropertyMap) error {
	o.log.flush()
	if err != nil {
		return fmt.Errorf("%w: running %q:\n%s", err, command, o.both.String())
	}
	secret := serve.AnySecret(in)
	set := func(k string, s string) {
		v := resource.NewStringProperty(strings.TrimSuffix(s, "\n"))
		if secret {
			v = resource.MakeSecret(v)
		}
		state[resource.PropertyKey(k)] = v
	}
	set("stdout", o.stdout.String())
	set("stderr", o.stderr.String())
	return nil
}

// previousOutputs is PULUMI_COMMAND_STDOUT/STDERR from state, unless addPreviousOutputInEnv is false.
func previousOutputs(in, state resource.PropertyMap) map[string]string {
	env := map[string]string{}
	if add := serve.Plain(in["addPreviousOutputInEnv"]); !add.IsBool() || add.BoolValue() {
		if s, _ := serve.Str(state, "stdout"); s != "" {
			env["PULUMI_COMMAND_STDOUT"] = s
		}
		if s, _ := serve.Str(state, "stderr"); s != "" {
			env["PULUMI_COMMAND_STDERR"] = s
		}
	}
	return env
}

func stringMap(v resource.PropertyValue) map[string]string {
	out := map[string]string{}
	if v = serve.Plain(v); v.IsObject() {
		for k, e := range v.ObjectValue() {
			out[string(k)] = serve.Plain(e).StringValue()
		}
	}
	return out
}

// runLocal executes command on this machine.
func runLocal(ctx context.Context, urn resource.URN, command string, in, state resource.PropertyMap) error {
	args := []string{"/bin/sh", "-c"}
	if v := serve.Plain(in["interpreter"]); v.IsArray() && len(v.ArrayValue()) > 0 {
		args = nil
		for _, a := range v.ArrayValue() {
			args = append(args, serve.Plain(a).StringValue())
		}
	}
	args = append(args, command)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if dir, ok := serve.Str(in, "dir"); ok {
		cmd.Dir = dir
	}
	cmd.Env = os.Environ()
	for k, v := range stringMap(in["environment"]) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range previousOutputs(in, state) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if stdin, ok := serve.Str(in, "stdin"); ok && stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	o := newOutput(ctx, urn, in)
	cmd.Stdout, cmd.Stderr = o.outW, o.errW
	return o.finish(cmd.Run(), command, in, state)
}

// runRemote executes command over SSH.
func runRemote(ctx context.Context, urn resource.URN, command string, in, state resource.PropertyMap) error {
	client, err := dial(ctx, urn, serve.Plain(in["connection"]))
	if err != nil {
		return err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return err
	}
	defer session.Close()
	for k, v := range stringMap(in["environment"]) {
		if err := session.Setenv(k, v); err != nil {
			return fmt.Errorf("could not set environment variable %q (the SSH server must accept it with AcceptEnv): %w", k, err)
		}
	}
	for k, v := range previousOutputs(in, state) {
		if err := session.Setenv(k, v); err != nil {
			serve.Log(ctx, pulumirpc.LogSeverity_WARNING, urn, fmt.Sprintf("Unable to set '%s'. This only works if your SSH server is configured to accept these variables via AcceptEnv.", k), false)
		}
	}
	if stdin, ok := serve.Str(in, "stdin"); ok && stdin != "" {
		session.Stdin = strings.NewReader(stdin)
	}
	o := newOutput(ctx, urn, in)
	session.Stdout, session.Stderr = o.outW, o.errW
	// A timeout or cancellation ends the session by closing the connection.
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()
	return o.finish(session.Run(command), command, in, state)
}

// dial connects as upstream's Connection.Dial does, without a proxy.
func dial(ctx context.Context, urn resource.URN, conn resource.PropertyValue) (*ssh.Client, error) {
	if !conn.IsObject() {
		return nil, fmt.Errorf("connection is required")
	}
	c := conn.ObjectValue()
	get := func(k string) (string, bool) { return serve.Str(c, k) }
	num := func(k string, def int) int {
		if v := serve.Plain(c[resource.PropertyKey(k)]); v.IsNumber() {
			return int(v.NumberValue())
		}
		return def
	}
	user, ok := get("user")
	if !ok {
		user = "root"
	}
	config := &ssh.ClientConfig{
		User:            user,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), //nolint:gosec // upstream: no hostKey, no check
		Timeout:         time.Duration(num("perDialTimeout", 15)) * time.Second,
	}
	if hk, ok := get("hostKey"); ok {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hk))
		if err != nil {
			return nil, fmt.Errorf("failed to parse host key: %w", err)
		}
		config.HostKeyCallback = ssh.FixedHostKey(key)
		config.HostKeyAlgorithms = []string{key.Type()}
	}
	if pk, ok := get("privateKey"); ok {
		var signer ssh.Signer
		var err error
		if pw, ok := get("privateKeyPassword"); ok {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(pk), []byte(pw))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(pk))
		}
		if err != nil {
			return nil, err
		}
		config.Auth = append(config.Auth, ssh.PublicKeys(signer))
	}
	if pw, ok := get("password"); ok {
		config.Auth = append(config.Auth, ssh.Password(pw))
	}
	sock, ok := get("agentSocketPath")
	if !ok {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" {
		a, err := net.Dial("unix", sock)
		if err != nil {
			return nil, err
		}
		config.Auth = append(config.Auth, ssh.PublicKeysCallback(agent.NewClient(a).Signers))
	}
	host, _ := get("host")
	endpoint := net.JoinHostPort(host, fmt.Sprint(num("port", 22)))
	limit := num("dialErrorLimit", 10)
	delay := 100 * time.Millisecond // sdk/go/common/util/retry defaults: 100 ms, x1.5, at most 5 s
	for dials := 1; ; dials++ {
		client, err := ssh.Dial("tcp", endpoint, config)
		if err == nil {
			return client, nil
		}
		if limit > -1 && dials > limit {
			return nil, fmt.Errorf("after %d failed attempts: %w", dials-1, err)
		}
		serve.Log(ctx, pulumirpc.LogSeverity_INFO, urn, fmt.Sprintf("Dial %d/%s failed: retrying", dials, limitText(limit)), true)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		delay = min(time.Duration(float64(delay)*1.5), 5*time.Second)
	}
}

func limitText(limit int) string {
	if limit == -1 {
		return "inf"
	}
	return fmt.Sprint(limit)
}
