// STAND-IN for pulumi-resource-command 1.2.1 (github.com/pulumi/pulumi-command/provider, commit
// 7f3eb6f3b77cd0fa3895ba437a695dd393f7dd25).
//
// The module proxy reachable here refuses that module, so this is our own provider with the same
// package name, version and resource token, implementing only what runner-fleet uses:
// command:local:Command. It follows the upstream sources (rows in docs/upstream.md):
//   - inputs triggers, create, update, delete, stdin, logging, interpreter, dir, environment,
//     addPreviousOutputInEnv; outputs are the inputs plus stdout and stderr
//     (provider/pkg/provider/local/base.go, common/inputs.go);
//   - a change to triggers replaces the resource, any other input change updates it
//     (`provider:"replaceOnChanges"` on Triggers only);
//   - Create runs `create`; Update runs `update`, or `create` when there is no `update`; Delete
//     runs `delete`; nothing runs in a preview (local/commandController.go);
//   - in a preview, stdout/stderr are unknown on create, and on update when any input changed or is
//     unknown (pulumi-go-provider infer/resource.go markComputed);
//   - commands run under `/bin/sh -c` (or interpreter) in dir (default: the provider's cwd, which
//     is the program directory), with the previous stdout/stderr in PULUMI_COMMAND_STDOUT/STDERR
//     unless addPreviousOutputInEnv is false; stdout and stderr lose one trailing newline; a
//     failure reports `<err>: running "<command>":\n<output>` (local/commandOutputs.go);
//   - logging (default stdoutAndStderr) decides what is echoed to the engine (local/logging.go).
//
// Not implemented: assetPaths, archivePaths, command:remote:*, invokes.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/blang/semver"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"

	"runner-fleet/test/engine-stand-ins/internal/serve"
)

const commandType = "command:local:Command"

// Version is stamped by `npm run engine` to the @pulumi/command version in package.json.
var Version = "1.2.1"

var inputKeys = []string{
	"triggers", "create", "update", "delete", "stdin", "logging", "interpreter", "dir",
	"environment", "assetPaths", "archivePaths", "addPreviousOutputInEnv",
}

type provider struct {
	plugin.UnimplementedProvider
}

func main() { serve.Provider(&provider{}) }

func (p *provider) Close() error { return nil }

func (p *provider) GetPluginInfo(context.Context) (plugin.PluginInfo, error) {
	v := semver.MustParse(Version)
	return plugin.PluginInfo{Version: &v}, nil
}

func (p *provider) CheckConfig(_ context.Context, req plugin.CheckConfigRequest) (plugin.CheckConfigResponse, error) {
	return plugin.CheckConfigResponse{Properties: req.News}, nil
}

func (p *provider) DiffConfig(context.Context, plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	return plugin.DiffResult{Changes: plugin.DiffNone}, nil
}

func (p *provider) Configure(context.Context, plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	return plugin.ConfigureResponse{}, nil
}

func (p *provider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	if req.Type != commandType {
		return plugin.CheckResponse{}, fmt.Errorf("stand-in command provider: unsupported type %s", req.Type)
	}
	var failures []plugin.CheckFailure
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
	return serve.Diff(req.OldInputs, req.NewInputs, inputKeys, map[string]bool{"triggers": true}), nil
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
		err = run(ctx, create, req.Properties, state)
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
		changed := serve.Diff(req.OldInputs, req.NewInputs, inputKeys, nil).Changes == plugin.DiffSome
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
		if err := run(ctx, cmd, req.NewInputs, state); err != nil {
			return plugin.UpdateResponse{}, err
		}
	}
	return plugin.UpdateResponse{Properties: state}, nil
}

func (p *provider) Delete(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	if del, ok := serve.Str(req.Outputs, "delete"); ok {
		state := req.Outputs.Copy()
		return plugin.DeleteResponse{}, run(ctx, del, req.Outputs, state)
	}
	return plugin.DeleteResponse{}, nil
}

// run executes command with the inputs in in and writes stdout/stderr into state; the previous
// stdout/stderr are read from state first.
func run(ctx context.Context, command string, in, state resource.PropertyMap) error {
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
	if env := serve.Plain(in["environment"]); env.IsObject() {
		for k, v := range env.ObjectValue() {
			cmd.Env = append(cmd.Env, string(k)+"="+serve.Plain(v).StringValue())
		}
	}
	if add := serve.Plain(in["addPreviousOutputInEnv"]); !add.IsBool() || add.BoolValue() {
		if s, _ := serve.Str(state, "stdout"); s != "" {
			cmd.Env = append(cmd.Env, "PULUMI_COMMAND_STDOUT="+s)
		}
		if s, _ := serve.Str(state, "stderr"); s != "" {
			cmd.Env = append(cmd.Env, "PULUMI_COMMAND_STDERR="+s)
		}
	}
	if stdin, ok := serve.Str(in, "stdin"); ok && stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	logging, ok := serve.Str(in, "logging")
	if !ok {
		logging = "stdoutAndStderr"
	}
	var stdout, stderr, both bytes.Buffer
	outs := []io.Writer{&stdout, &both}
	errs := []io.Writer{&stderr, &both}
	// Plugin stderr is shown by the engine, which is where upstream's log lines end up too.
	if logging == "stdout" || logging == "stdoutAndStderr" {
		outs = append(outs, os.Stderr)
	}
	if logging == "stderr" || logging == "stdoutAndStderr" {
		errs = append(errs, os.Stderr)
	}
	cmd.Stdout, cmd.Stderr = io.MultiWriter(outs...), io.MultiWriter(errs...)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: running %q:\n%s", err, command, both.String())
	}
	secret := serve.AnySecret(in)
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
