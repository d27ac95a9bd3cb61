// STAND-IN for pulumi-resource-command 1.2.1's command:remote:Command (same upstream commit as
// main.go). runner-fleet's readiness, seed and pools steps are remote commands, and the e2e runs
// them against its SSH test hosts. It follows provider/pkg/provider/remote/ (rows in
// docs/upstream.md, "End-to-end test hosts and stand-ins"):
//   - inputs connection (host; port 22, user "root", password, privateKey, privateKeyPassword,
//     agentSocketPath, dialErrorLimit 10, perDialTimeout 15, hostKey), triggers, create, update,
//     delete, stdin, logging, environment, addPreviousOutputInEnv; connection is a secret
//     (`provider:"secret"`, command.go);
//   - SSH auth: privateKey, password, then the agent at agentSocketPath or $SSH_AUTH_SOCK; host
//     key pinned when hostKey is set, else not checked (connection.go SSHConfig);
//   - dials retried until dialErrorLimit failures (-1: unlimited), each bounded by
//     perDialTimeout, failing with `after N failed attempts: <err>` (connection.go dialWithRetry);
//     the wait between dials is 100 ms growing x1.5 to at most 5 s (pulumi sdk retry.Until, as
//     components/deploy-commands.ts dialErrorLimitFor assumes);
//   - environment and PULUMI_COMMAND_STDOUT/STDERR through session.Setenv (environment fails the
//     command when the server refuses it; the previous outputs only warn), stdin, `session.Run`,
//     a failure reported as `<err>: running "<command>":\n<output>` (commandOutputs.go);
//   - Create/Update/Delete and replace-on-triggers as local commands (commandController.go).
//
// Not implemented: proxy, copy resources. A failed create is not recorded (upstream records it
// with an init error and retries it on the next update); either way the next `up` runs it again.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"

	"runner-fleet/test/engine-stand-ins/internal/serve"
)

const remoteType = "command:remote:Command"

var remoteInputKeys = []string{
	"connection", "triggers", "create", "update", "delete", "stdin", "logging", "environment",
	"addPreviousOutputInEnv",
}

func checkRemote(req plugin.CheckRequest) (plugin.CheckResponse, error) {
	var failures []plugin.CheckFailure
	conn := serve.Plain(req.News["connection"])
	if conn.IsComputed() {
		return plugin.CheckResponse{Properties: req.News}, nil
	}
	if !conn.IsObject() {
		failures = append(failures, plugin.CheckFailure{Property: "connection", Reason: "connection is required"})
	} else if h, ok := serve.Str(conn.ObjectValue(), "host"); !ok && !serve.Plain(conn.ObjectValue()["host"]).IsComputed() || (ok && h == "") {
		failures = append(failures, plugin.CheckFailure{Property: "connection.host", Reason: "host is required"})
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

func diffRemote(req plugin.DiffRequest) (plugin.DiffResponse, error) {
	return serve.Diff(req.OldInputs, req.NewInputs, remoteInputKeys, map[string]bool{"triggers": true}), nil
}

// remoteState is the inputs with the connection kept secret, as upstream's schema marks it.
func remoteState(in resource.PropertyMap) resource.PropertyMap {
	state := in.Copy()
	if c, ok := state["connection"]; ok && !c.IsSecret() && !c.IsComputed() {
		state["connection"] = resource.MakeSecret(c)
	}
	return state
}

func createRemote(ctx context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	id, err := resource.NewUniqueHexID(req.Name+"-", 8, 0)
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	state := remoteState(req.Properties)
	if req.Preview {
		state["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
		state["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
		return plugin.CreateResponse{ID: id, Properties: state}, nil
	}
	state["stdout"], state["stderr"] = resource.NewStringProperty(""), resource.NewStringProperty("")
	if create, ok := serve.Str(req.Properties, "create"); ok {
		if err := runRemote(ctx, create, req.Properties, state); err != nil {
			return plugin.CreateResponse{}, err
		}
	}
	return plugin.CreateResponse{ID: id, Properties: state}, nil
}

func updateRemote(ctx context.Context, req plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	state := remoteState(req.NewInputs)
	state["stdout"], state["stderr"] = req.OldOutputs["stdout"], req.OldOutputs["stderr"]
	if req.Preview {
		changed := serve.Diff(req.OldInputs, req.NewInputs, remoteInputKeys, nil).Changes == plugin.DiffSome
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
		if err := runRemote(ctx, cmd, req.NewInputs, state); err != nil {
			return plugin.UpdateResponse{}, err
		}
	}
	return plugin.UpdateResponse{Properties: state}, nil
}

func deleteRemote(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	if del, ok := serve.Str(req.Outputs, "delete"); ok {
		state := req.Outputs.Copy()
		return plugin.DeleteResponse{}, runRemote(ctx, del, req.Outputs, state)
	}
	return plugin.DeleteResponse{}, nil
}

type connection struct {
	host, user, password, privateKey, privateKeyPassword, agentSocket, hostKey string
	port, dialErrorLimit, perDialTimeout                                        int
}

func num(m resource.PropertyMap, key string, def int) int {
	v := serve.Plain(m[resource.PropertyKey(key)])
	if v.IsNumber() {
		return int(v.NumberValue())
	}
	return def
}

func parseConnection(in resource.PropertyMap) (connection, error) {
	v := serve.Plain(in["connection"])
	if !v.IsObject() {
		return connection{}, fmt.Errorf("connection is required")
	}
	m := v.ObjectValue()
	str := func(k, def string) string {
		if s, ok := serve.Str(m, k); ok {
			return s
		}
		return def
	}
	return connection{
		host: str("host", ""), user: str("user", "root"), password: str("password", ""),
		privateKey: str("privateKey", ""), privateKeyPassword: str("privateKeyPassword", ""),
		agentSocket: str("agentSocketPath", os.Getenv("SSH_AUTH_SOCK")), hostKey: str("hostKey", ""),
		port: num(m, "port", 22), dialErrorLimit: num(m, "dialErrorLimit", 10), perDialTimeout: num(m, "perDialTimeout", 15),
	}, nil
}

func (c connection) config() (*ssh.ClientConfig, error) {
	cfg := &ssh.ClientConfig{
		User:            c.user,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), //nolint:gosec // as upstream without hostKey
		Timeout:         time.Duration(c.perDialTimeout) * time.Second,
	}
	if c.hostKey != "" {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.hostKey))
		if err != nil {
			return nil, fmt.Errorf("failed to parse host key: %w", err)
		}
		cfg.HostKeyCallback = ssh.FixedHostKey(key)
		cfg.HostKeyAlgorithms = []string{key.Type()}
	}
	if c.privateKey != "" {
		var signer ssh.Signer
		var err error
		if c.privateKeyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(c.privateKey), []byte(c.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(c.privateKey))
		}
		if err != nil {
			return nil, err
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if c.password != "" {
		cfg.Auth = append(cfg.Auth, ssh.Password(c.password))
	}
	if c.agentSocket != "" {
		conn, err := net.Dial("unix", c.agentSocket)
		if err != nil {
			return nil, err
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
	}
	return cfg, nil
}

func (c connection) dial(ctx context.Context) (*ssh.Client, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	endpoint := net.JoinHostPort(c.host, strconv.Itoa(c.port))
	delay := 100 * time.Millisecond
	for try := 0; ; try++ {
		client, err := ssh.Dial("tcp", endpoint, cfg)
		if err == nil {
			return client, nil
		}
		if c.dialErrorLimit > -1 && try+1 > c.dialErrorLimit {
			return nil, fmt.Errorf("after %d failed attempts: %w", try, err)
		}
		fmt.Fprintf(os.Stderr, "Dial %d/%d failed: retrying\n", try+1, c.dialErrorLimit)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(time.Duration(float64(delay)*1.5), 5*time.Second)
	}
}

// runRemote runs command on the connection's host and writes stdout/stderr into state.
func runRemote(ctx context.Context, command string, in, state resource.PropertyMap) error {
	conn, err := parseConnection(in)
	if err != nil {
		return err
	}
	client, err := conn.dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return err
	}
	defer session.Close()
	if env := serve.Plain(in["environment"]); env.IsObject() {
		for k, v := range env.ObjectValue() {
			if err := session.Setenv(string(k), serve.Plain(v).StringValue()); err != nil {
				return fmt.Errorf("could not set environment variable %q: %w", string(k), err)
			}
		}
	}
	if add := serve.Plain(in["addPreviousOutputInEnv"]); !add.IsBool() || add.BoolValue() {
		for _, k := range []string{"stdout", "stderr"} {
			if s, _ := serve.Str(state, k); s != "" {
				_ = session.Setenv("PULUMI_COMMAND_"+strings.ToUpper(k), s) // upstream only warns
			}
		}
	}
	if stdin, ok := serve.Str(in, "stdin"); ok && stdin != "" {
		session.Stdin = strings.NewReader(stdin)
	}
	logging, ok := serve.Str(in, "logging")
	if !ok {
		logging = "stdoutAndStderr"
	}
	var stdout, stderr, both bytes.Buffer
	outs := []io.Writer{&stdout, &both}
	errs := []io.Writer{&stderr, &both}
	if logging == "stdout" || logging == "stdoutAndStderr" {
		outs = append(outs, os.Stderr)
	}
	if logging == "stderr" || logging == "stdoutAndStderr" {
		errs = append(errs, os.Stderr)
	}
	session.Stdout, session.Stderr = io.MultiWriter(outs...), io.MultiWriter(errs...)
	if err := session.Run(command); err != nil {
		return fmt.Errorf("%w: running %q:\n%s", err, command, both.String())
	}
	secret := serve.AnySecret(withoutConnection(in))
	set := func(k string, s string) {
		v := resource.NewStringProperty(strings.TrimSuffix(s, "\n"))
		if secret {
			v = resource.MakeSecret(v)
		}
		state[resource.PropertyKey(k)] = v
	}
	set("stdout", stdout.String())
	set("stderr", stderr.String())
	return nil
}

func withoutConnection(in resource.PropertyMap) resource.PropertyMap {
	m := in.Copy()
	delete(m, "connection")
	return m
}
