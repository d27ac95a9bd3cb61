// Package serve starts a resource provider plugin the way the engine expects: a gRPC server on a
// kernel-chosen port whose number is the plugin's first line on stdout.
package serve

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/blang/semver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// engineAddress is the engine's gRPC address, the plugin's last argument.
var engineAddress string

var (
	engineOnce sync.Once
	engine     pulumirpc.EngineClient
)

// Log sends a message about urn to the engine, as a provider's logger does: ephemeral messages
// are status lines next to the resource, the others diagnostics.
func Log(ctx context.Context, severity pulumirpc.LogSeverity, urn resource.URN, msg string, ephemeral bool) {
	engineOnce.Do(func() {
		if engineAddress == "" {
			return
		}
		conn, err := grpc.NewClient(engineAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			engine = pulumirpc.NewEngineClient(conn)
		}
	})
	if engine == nil {
		fmt.Fprintln(os.Stderr, msg)
		return
	}
	_, _ = engine.Log(ctx, &pulumirpc.LogRequest{Severity: severity, Message: msg, Urn: string(urn), Ephemeral: ephemeral})
}

// Base answers what both stand-in providers answer alike: their version (stamped at build time),
// their config taken as given, nothing to close. Everything else is unimplemented until a
// provider defines it.
type Base struct {
	plugin.UnimplementedProvider
	Version string
}

func (b *Base) Close() error { return nil }

func (b *Base) GetPluginInfo(context.Context) (plugin.PluginInfo, error) {
	v := semver.MustParse(b.Version)
	return plugin.PluginInfo{Version: &v}, nil
}

func (b *Base) CheckConfig(_ context.Context, req plugin.CheckConfigRequest) (plugin.CheckConfigResponse, error) {
	return plugin.CheckConfigResponse{Properties: req.News}, nil
}

// Provider serves p until the engine hangs up.
func Provider(p plugin.Provider) {
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-") {
			engineAddress = a
		}
		if a == "-version" || a == "--version" {
			info, _ := p.GetPluginInfo(context.Background())
			if info.Version != nil {
				fmt.Println(info.Version.String())
			}
			return
		}
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterResourceProviderServer(srv, plugin.NewProviderServer(p))
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "could not start provider RPC server: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "provider RPC stopped serving: %v\n", err)
		os.Exit(1)
	}
}

// Plain returns v without its secret wrapper.
func Plain(v resource.PropertyValue) resource.PropertyValue {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	return v
}

// Str is the string at key, or "" (and false) when it is absent, null or not a string.
func Str(m resource.PropertyMap, key string) (string, bool) {
	v := Plain(m[resource.PropertyKey(key)])
	if !v.IsString() {
		return "", false
	}
	return v.StringValue(), true
}

// AnySecret says whether any value in m is, or holds, a secret.
func AnySecret(m resource.PropertyMap) bool {
	return resource.NewObjectProperty(m).ContainsSecrets()
}

// AnyUnknown says whether any value in m is, or holds, an unknown.
func AnyUnknown(m resource.PropertyMap) bool {
	return resource.NewObjectProperty(m).ContainsUnknowns()
}

// Diff compares the given input keys of olds and news the way pulumi-go-provider's infer does
// (a detailed diff per nested path): a change under a key in replace replaces the resource, any
// other change updates it.
func Diff(olds, news resource.PropertyMap, keys []string, replace map[string]bool) plugin.DiffResult {
	pick := func(m resource.PropertyMap) resource.PropertyMap {
		out := resource.PropertyMap{}
		for _, k := range keys {
			if v, ok := m[resource.PropertyKey(k)]; ok && !v.IsNull() {
				out[resource.PropertyKey(k)] = v
			}
		}
		return out
	}
	res := plugin.DiffResult{Changes: plugin.DiffNone, DetailedDiff: map[string]plugin.PropertyDiff{}}
	objDiff := pick(olds).Diff(pick(news))
	if objDiff == nil || !objDiff.AnyChanges() {
		return res
	}
	res.Changes = plugin.DiffSome
	for path, d := range plugin.NewDetailedDiffFromObjectDiff(objDiff, true) {
		root := path
		if i := strings.IndexAny(path, ".["); i >= 0 {
			root = path[:i]
		}
		if replace[root] {
			d = d.ToReplace()
			res.ReplaceKeys = append(res.ReplaceKeys, resource.PropertyKey(root))
		}
		res.DetailedDiff[path] = d
	}
	for _, k := range objDiff.ChangedKeys() {
		res.ChangedKeys = append(res.ChangedKeys, k)
	}
	return res
}
