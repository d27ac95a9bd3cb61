// STAND-IN for pulumi-resource-vault 7.8.0 (github.com/pulumi/pulumi-vault/provider/v7, bridging
// hashicorp/terraform-provider-vault v5.8.0, commit 91f91c5c7909dc221edd45ad48ea774dfaf6509c).
//
// The module proxy reachable here refuses both modules, so this is our own provider with the same
// package name, version and type tokens, implementing only the resources runner-fleet uses, over
// the Vault HTTP API (which OpenBao serves unchanged). What each resource sends follows the
// terraform-provider-vault sources named in docs/upstream.md:
//
//	vault:index/mount:Mount            POST sys/mounts/<path>, tune on change, DELETE on delete
//	vault:index/authBackend:AuthBackend POST sys/auth/<path>, tune on change, DELETE on delete
//	vault:index/policy:Policy          PUT sys/policies/acl/<name>, DELETE on delete
//	vault:appRole/authBackendRole:AuthBackendRole
//	                                   POST auth/<backend>/role/<role>, GET .../role-id, DELETE
//	vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId
//	                                   POST .../secret-id with X-Vault-Wrap-TTL; every input
//	                                   forces a new one; delete destroys the accessor
//	vault:kv/secretV2:SecretV2         POST <mount>/data/<name>; delete removes
//	                                   <mount>/metadata/<name> when deleteAllVersions
//	vault:kv/getSecretV2:getSecretV2   (function) GET <mount>/data/<name>[?version=N]
//	vault:generic/endpoint:Endpoint    POST <path> with dataJson, then GET <path> back into
//	                                   dataJson (ignoreAbsentFields: only its keys) unless
//	                                   disableRead; DELETE <path> unless disableDelete
//
// The role's tokenBoundCidrs and secretIdBoundCidrs are read back from Vault after every write
// and on refresh, and diffed config against state, as upstream's Read and the bridge do; an
// update sends only the fields that changed, less ignoreChanges keys (upstream's Update and the
// bridge's computeIgnoreChanges), so a role write leaves the other fields as Vault has them.
//
// The provider authenticates with its `token` input or VAULT_TOKEN and, unless skipChildToken,
// first creates a child token as upstream's internal/provider/meta.go does: TTL and explicit max
// TTL of maxLeaseTtlSeconds (else TERRAFORM_VAULT_MAX_TTL, else 1200 s), not renewable, made once
// on first use and never refreshed.
// A secret_id's ttl and numUses are read back from Vault into state after create, and diffed
// against state (not the old inputs), as the bridge diffs the Terraform config against the
// resource's state: an unset ttl against a read-back non-zero one forces a new secret_id. An
// ignoreChanges key is left out of the diff, as the bridge drops it from the Terraform diff.
// Deviation: a changed Mount or AuthBackend path replaces the resource here; upstream remounts it
// in place (path is not ForceNew there). Refresh (Read) notices an object that is gone, not drift
// in its fields (the role's two CIDR lists and an endpoint's dataJson excepted). Not
// implemented: import, write_fields, every other resource.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"

	"runner-fleet/test/engine-stand-ins/internal/serve"
)

// Version is stamped by `npm run engine` to the @pulumi/vault version in package.json.
var Version = "7.8.0"

// kind describes one resource type: its input keys, which of them force a replacement, and how it
// is created, updated and deleted.
type kind struct {
	inputs  []string
	replace map[string]bool
	secret  []string // outputs the upstream schema marks sensitive
	create  func(c *client, name string, in resource.PropertyMap) (resource.ID, resource.PropertyMap, error)
	update  func(c *client, id resource.ID, olds, news resource.PropertyMap) (resource.PropertyMap, error)
	delete  func(c *client, id resource.ID, state resource.PropertyMap) error
	outputs []string // computed outputs, unknown in a preview
	// Inputs upstream's Read sets from Vault: the bridge diffs the config against state for
	// them (not against the old inputs), each value through readBackAs on both sides.
	readBack   []string
	readBackAs func(resource.PropertyValue) resource.PropertyValue
}

var roleInputs = []string{"backend", "roleName", "roleId", "bindSecretId", "secretIdBoundCidrs", "secretIdNumUses",
	"secretIdTtl", "tokenPolicies", "tokenTtl", "tokenMaxTtl", "tokenBoundCidrs", "tokenNumUses", "tokenType"}

var endpointInputs = []string{"path", "dataJson", "disableRead", "disableDelete", "ignoreAbsentFields", "writeFields"}

// roleReadBack are the role inputs whose state upstream's Read sets from Vault and the bridge
// diffs config against (the others are diffed against the old inputs here).
var roleReadBack = []string{"tokenBoundCidrs", "secretIdBoundCidrs"}

var kinds = map[tokens.Type]kind{
	"vault:index/mount:Mount": {
		inputs:  []string{"path", "type", "description", "options", "defaultLeaseTtlSeconds", "maxLeaseTtlSeconds"},
		replace: map[string]bool{"type": true, "path": true}, outputs: []string{"accessor"},
		create: func(c *client, _ string, in resource.PropertyMap) (resource.ID, resource.PropertyMap, error) {
			path := str(in, "path")
			body := map[string]any{"type": str(in, "type"), "description": str(in, "description"), "options": plainMap(in, "options")}
			if _, err := c.call("POST", "sys/mounts/"+path, body, ""); err != nil {
				return "", nil, err
			}
			acc, err := c.accessor("sys/mounts", path)
			return resource.ID(path), withOutputs(in, map[string]string{"accessor": acc}), err
		},
		update: func(c *client, _ resource.ID, olds, news resource.PropertyMap) (resource.PropertyMap, error) {
			body := map[string]any{"description": str(news, "description"), "options": plainMap(news, "options")}
			_, err := c.call("POST", "sys/mounts/"+str(news, "path")+"/tune", body, "")
			return withOutputs(news, map[string]string{"accessor": str(olds, "accessor")}), err
		},
		delete: func(c *client, id resource.ID, _ resource.PropertyMap) error {
			_, err := c.call("DELETE", "sys/mounts/"+string(id), nil, "")
			return err
		},
	},
	"vault:index/authBackend:AuthBackend": {
		inputs:  []string{"type", "path", "description", "local"},
		replace: map[string]bool{"type": true, "path": true, "local": true}, outputs: []string{"accessor"},
		create: func(c *client, _ string, in resource.PropertyMap) (resource.ID, resource.PropertyMap, error) {
			path := str(in, "path")
			if path == "" {
				path = str(in, "type")
			}
			if _, err := c.call("POST", "sys/auth/"+path, map[string]any{"type": str(in, "type"), "description": str(in, "description")}, ""); err != nil {
				return "", nil, err
			}
			acc, err := c.accessor("sys/auth", path)
			return resource.ID(path), withOutputs(in, map[string]string{"accessor": acc, "path": path}), err
		},
		update: func(c *client, id resource.ID, olds, news resource.PropertyMap) (resource.PropertyMap, error) {
			_, err := c.call("POST", "sys/auth/"+string(id)+"/tune", map[string]any{"description": str(news, "description")}, "")
			return withOutputs(news, map[string]string{"accessor": str(olds, "accessor"), "path": string(id)}), err
		},
		delete: func(c *client, id resource.ID, _ resource.PropertyMap) error {
			_, err := c.call("DELETE", "sys/auth/"+string(id), nil, "")
			return err
		},
	},
	"vault:index/policy:Policy": {
		inputs: []string{"name", "policy"}, replace: map[string]bool{"name": true},
		create: func(c *client, _ string, in resource.PropertyMap) (resource.ID, resource.PropertyMap, error) {
			_, err := c.call("PUT", "sys/policies/acl/"+str(in, "name"), map[string]any{"policy": str(in, "policy")}, "")
			return resource.ID(str(in, "name")), in.Copy(), err
		},
		update: func(c *client, _ resource.ID, _, news resource.PropertyMap) (resource.PropertyMap, error) {
			_, err := c.call("PUT", "sys/policies/acl/"+str(news, "name"), map[string]any{"policy": str(news, "policy")}, "")
			return news.Copy(), err
		},
		delete: func(c *client, id resource.ID, _ resource.PropertyMap) error {
			_, err := c.call("DELETE", "sys/policies/acl/"+string(id), nil, "")
			return err
		},
	},
	"vault:appRole/authBackendRole:AuthBackendRole": {
		inputs:  roleInputs,
		replace: map[string]bool{"backend": true, "roleName": true}, outputs: []string{"roleId"},
		// Sets: an unset list is the empty set, and order does not count.
		readBack: roleReadBack, readBackAs: sortedSet,
		create: func(c *client, _ string, in resource.PropertyMap) (resource.ID, resource.PropertyMap, error) {
			path := rolePath(in)
			roleID, err := writeRole(c, path, in, roleInputs, false)
			if err != nil {
				return "", nil, err
			}
			// Upstream's Create ends in Read.
			out, err := readRoleCIDRs(c, path, in, withOutputs(in, map[string]string{"roleId": roleID, "backend": backendOf(in)}))
			return resource.ID(path), out, err
		},
		// The provider's Update calls updateRole instead (it needs the ignoreChanges keys).
		delete: func(c *client, id resource.ID, _ resource.PropertyMap) error {
			_, err := c.call("DELETE", string(id), nil, "")
			return err
		},
	},
	"vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId": {
		inputs: []string{"backend", "roleName", "wrappingTtl", "withWrappedAccessor", "metadata", "cidrLists", "secretId", "ttl", "numUses"},
		replace: map[string]bool{"backend": true, "roleName": true, "wrappingTtl": true, "withWrappedAccessor": true,
			"metadata": true, "cidrLists": true, "secretId": true, "ttl": true, "numUses": true},
		secret:  []string{"secretId", "wrappingToken"},
		outputs: []string{"accessor", "wrappingToken", "wrappingAccessor", "secretId"},
		// An unset number as its zero (SDKv2's schemaMap.diffString takes Type.Zero() for a value
		// missing from the config).
		readBack: readBackSecretIDFields, readBackAs: zeroIfNull,
		create: createSecretID,
		delete: func(c *client, _ resource.ID, state resource.PropertyMap) error {
			body := map[string]any{"secret_id_accessor": str(state, "accessor")}
			path := rolePath(state) + "/secret-id-accessor/destroy"
			if str(state, "wrappingToken") != "" && !boolean(state, "withWrappedAccessor") {
				path, body = "auth/token/revoke-accessor", map[string]any{"accessor": str(state, "accessor")}
			}
			_, err := c.call("POST", path, body, "")
			return err
		},
	},
	"vault:generic/endpoint:Endpoint": {
		inputs:  endpointInputs,
		replace: map[string]bool{"path": true}, secret: []string{"dataJson"},
		outputs: []string{"writeDataJson", "writeData"},
		create: func(c *client, _ string, in resource.PropertyMap) (resource.ID, resource.PropertyMap, error) {
			out, err := writeEndpoint(c, in)
			return resource.ID(str(in, "path")), out, err
		},
		update: func(c *client, _ resource.ID, _, news resource.PropertyMap) (resource.PropertyMap, error) {
			return writeEndpoint(c, news)
		},
		delete: func(c *client, id resource.ID, state resource.PropertyMap) error {
			if boolean(state, "disableDelete") {
				return nil
			}
			_, err := c.call("DELETE", string(id), nil, "")
			return err
		},
	},
	"vault:kv/secretV2:SecretV2": {
		inputs:  []string{"mount", "name", "dataJson", "deleteAllVersions", "cas", "options", "customMetadata"},
		replace: map[string]bool{"mount": true, "name": true}, outputs: []string{"data", "path", "metadata"},
		secret: []string{"data", "dataJson"},
		create: func(c *client, _ string, in resource.PropertyMap) (resource.ID, resource.PropertyMap, error) {
			out, err := writeKV(c, in)
			return resource.ID(kvPath(in, "data")), out, err
		},
		update: func(c *client, _ resource.ID, _, news resource.PropertyMap) (resource.PropertyMap, error) {
			return writeKV(c, news)
		},
		delete: func(c *client, _ resource.ID, state resource.PropertyMap) error {
			which := "data"
			if boolean(state, "deleteAllVersions") {
				which = "metadata"
			}
			_, err := c.call("DELETE", kvPath(state, which), nil, "")
			return err
		},
	},
}

type provider struct {
	serve.Base
	mu     sync.Mutex
	config resource.PropertyMap
	client *client
}

func main() { serve.Provider(&provider{Base: serve.Base{Version: Version}}) }

func (p *provider) DiffConfig(_ context.Context, req plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	return serve.Diff(req.OldInputs, req.NewInputs, []string{"address", "token", "skipChildToken", "namespace", "maxLeaseTtlSeconds"}, nil), nil
}

func (p *provider) Configure(_ context.Context, req plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.config = req.Inputs
	return plugin.ConfigureResponse{}, nil
}

// api returns the client, creating it (and its child token) on first use so a preview that
// creates nothing does not need a reachable Vault.
func (p *provider) api() (*client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, nil
	}
	c := &client{addr: firstOf(str(p.config, "address"), os.Getenv("VAULT_ADDR")),
		token: firstOf(str(p.config, "token"), os.Getenv("VAULT_TOKEN")), http: &http.Client{Timeout: 30 * time.Second}}
	if c.addr == "" {
		return nil, fmt.Errorf("vault: no address: set the provider's address or VAULT_ADDR")
	}
	if c.token == "" {
		if b, err := os.ReadFile(os.Getenv("HOME") + "/.vault-token"); err == nil {
			c.token = strings.TrimSpace(string(b))
		}
	}
	if c.token == "" {
		return nil, fmt.Errorf("vault: no token: set VAULT_TOKEN or the provider's token")
	}
	if !boolean(p.config, "skipChildToken") {
		ttl := maxLeaseTTL(p.config)
		resp, err := c.call("POST", "auth/token/create", map[string]any{
			"display_name": "terraform", "ttl": fmt.Sprintf("%ds", ttl), "explicit_max_ttl": fmt.Sprintf("%ds", ttl),
			"renewable": false}, "")
		if err != nil {
			return nil, fmt.Errorf("vault: creating child token: %w", err)
		}
		auth, _ := resp["auth"].(map[string]any)
		c.token, _ = auth["client_token"].(string)
	}
	p.client = c
	return c, nil
}

// maxLeaseTTL is upstream's GetResourceDataInt(d, "max_lease_ttl_seconds", "TERRAFORM_VAULT_MAX_TTL",
// 1200) (internal/provider/meta.go): a non-zero provider input, else the environment variable
// when it is a number, else 1200. The engine may hand a provider's non-string inputs over
// JSON-encoded, so a string holding a number counts as the number.
func maxLeaseTTL(config resource.PropertyMap) int {
	v := serve.Plain(config["maxLeaseTtlSeconds"])
	n := 0
	switch {
	case v.IsNumber():
		n = int(v.NumberValue())
	case v.IsString():
		n, _ = strconv.Atoi(v.StringValue())
	}
	if n != 0 {
		return n
	}
	if env, err := strconv.Atoi(os.Getenv("TERRAFORM_VAULT_MAX_TTL")); err == nil {
		return env
	}
	return 1200
}

func (p *provider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	if _, ok := kinds[req.Type]; !ok {
		return plugin.CheckResponse{}, fmt.Errorf("stand-in vault provider: unsupported type %s", req.Type)
	}
	news := req.News.Copy()
	if req.Type == "vault:appRole/authBackendRole:AuthBackendRole" || req.Type == "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId" {
		if news["backend"].IsNull() {
			news["backend"] = resource.NewStringProperty("approle") // upstream Default
		}
	}
	return plugin.CheckResponse{Properties: news}, nil
}

func (p *provider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	k := kinds[req.Type]
	olds, news := req.OldInputs, req.NewInputs
	if len(k.readBack) > 0 {
		olds, news = olds.Copy(), news.Copy()
		for _, f := range k.readBack {
			key := resource.PropertyKey(f)
			olds[key] = k.readBackAs(req.OldOutputs[key])
			news[key] = k.readBackAs(news[key])
		}
	}
	if req.Type == "vault:generic/endpoint:Endpoint" {
		// Every field against state; data_json through its StateFunc (normalizeDataJSON).
		olds, news = req.OldOutputs.Copy(), news.Copy()
		if !serve.Plain(news["dataJson"]).IsComputed() {
			news["dataJson"] = resource.NewStringProperty(normalizeJSON(str(news, "dataJson")))
		}
		olds["dataJson"] = resource.NewStringProperty(str(olds, "dataJson"))
		for _, f := range []string{"disableRead", "disableDelete", "ignoreAbsentFields"} {
			olds[resource.PropertyKey(f)], news[resource.PropertyKey(f)] = falseIfNull(olds[resource.PropertyKey(f)]), falseIfNull(news[resource.PropertyKey(f)])
		}
	}
	// As the bridge: an ignored property's difference between config and state is dropped from
	// the Terraform diff too (pulumi-terraform-bridge pkg/tfbridge/diff.go computeIgnoreChanges),
	// not only reset to its old input by the engine. Top-level keys are all runner-fleet ignores.
	keys := []string{}
	for _, key := range k.inputs {
		if !slices.Contains(req.IgnoreChanges, key) {
			keys = append(keys, key)
		}
	}
	return serve.Diff(olds, news, keys, k.replace), nil
}

// readBackSecretIDFields are the secret_id inputs upstream's Read sets from Vault's
// secret-id-accessor/lookup (resource_approle_auth_backend_role_secret_id.go, FieldTTL and
// FieldNumUses from secret_id_ttl and secret_id_num_uses).
var readBackSecretIDFields = []string{"ttl", "numUses"}

func zeroIfNull(v resource.PropertyValue) resource.PropertyValue {
	if p := serve.Plain(v); p.IsNull() || (p.IsNumber() && p.NumberValue() == 0) {
		return resource.NewNumberProperty(0)
	}
	return v
}

func (p *provider) Create(_ context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	k := kinds[req.Type]
	if req.Preview {
		out := req.Properties.Copy()
		for _, o := range k.outputs {
			if out[resource.PropertyKey(o)].IsNull() {
				out[resource.PropertyKey(o)] = resource.MakeComputed(resource.NewStringProperty(""))
			}
		}
		return plugin.CreateResponse{Properties: out}, nil
	}
	c, err := p.api()
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	id, out, err := k.create(c, req.Name, req.Properties)
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	return plugin.CreateResponse{ID: id, Properties: markSecret(out, k.secret)}, nil
}

// Read (refresh) checks only that the object still exists, as upstream's Read functions do before
// anything else; one that is gone leaves state (empty ID), so the next up creates it again.
// Field drift is not read back.
func (p *provider) Read(_ context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	c, err := p.api()
	if err != nil {
		return plugin.ReadResponse{}, err
	}
	exists, err := existsFor(c, req.Type, req.ID, req.State)
	if err != nil {
		return plugin.ReadResponse{}, err
	}
	if !exists {
		return plugin.ReadResponse{}, nil
	}
	state := req.State
	switch req.Type {
	case "vault:appRole/authBackendRole:AuthBackendRole":
		if state, err = readRoleCIDRs(c, string(req.ID), req.Inputs, state); err != nil {
			return plugin.ReadResponse{}, err
		}
	case "vault:generic/endpoint:Endpoint":
		if state, err = readEndpoint(c, state); err != nil {
			return plugin.ReadResponse{}, err
		}
		if state == nil {
			return plugin.ReadResponse{}, nil
		}
		state = markSecret(state, kinds[req.Type].secret)
	}
	return plugin.ReadResponse{ReadResult: plugin.ReadResult{ID: req.ID, Inputs: req.Inputs, Outputs: state}}, nil
}

func existsFor(c *client, t tokens.Type, id resource.ID, state resource.PropertyMap) (bool, error) {
	get := func(method, path string, body any) (bool, error) {
		_, err := c.call(method, path, body, "")
		if isStatus(err, http.StatusNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	switch t {
	case "vault:index/mount:Mount", "vault:index/authBackend:AuthBackend":
		list := "sys/mounts"
		if t == "vault:index/authBackend:AuthBackend" {
			list = "sys/auth"
		}
		acc, err := c.accessor(list, string(id))
		return acc != "", err
	case "vault:index/policy:Policy":
		return get("GET", "sys/policies/acl/"+string(id), nil)
	case "vault:appRole/authBackendRole:AuthBackendRole":
		return get("GET", string(id), nil)
	case "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId":
		if ok, err := get("GET", rolePath(state), nil); !ok || err != nil {
			return ok, err // upstream: a role deleted out of band takes its secret_ids along
		}
		return get("POST", rolePath(state)+"/secret-id-accessor/lookup", map[string]any{"secret_id_accessor": str(state, "accessor")})
	case "vault:kv/secretV2:SecretV2":
		return get("GET", kvPath(state, "data"), nil)
	case "vault:generic/endpoint:Endpoint":
		return true, nil // readEndpoint decides, as upstream's Read does
	}
	return true, nil
}

func (p *provider) Update(_ context.Context, req plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	k := kinds[req.Type]
	isRole := req.Type == "vault:appRole/authBackendRole:AuthBackendRole"
	if req.Preview || (k.update == nil && !isRole) {
		out := req.NewInputs.Copy()
		for _, o := range k.outputs {
			out[resource.PropertyKey(o)] = req.OldOutputs[resource.PropertyKey(o)]
		}
		return plugin.UpdateResponse{Properties: out}, nil
	}
	c, err := p.api()
	if err != nil {
		return plugin.UpdateResponse{}, err
	}
	var out resource.PropertyMap
	if isRole {
		out, err = updateRole(c, req)
	} else {
		out, err = k.update(c, req.ID, req.OldOutputs, req.NewInputs)
	}
	if err != nil {
		return plugin.UpdateResponse{}, err
	}
	return plugin.UpdateResponse{Properties: markSecret(out, k.secret)}, nil
}

func (p *provider) Delete(_ context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	c, err := p.api()
	if err != nil {
		return plugin.DeleteResponse{}, err
	}
	return plugin.DeleteResponse{}, kinds[req.Type].delete(c, req.ID, req.Outputs)
}

// Invoke serves the one data source runner-fleet may read: vault:kv/getSecretV2:getSecretV2
// (upstream vault/data_source_kv_secret_v2.go): the latest or a given version of a KV v2
// document; data and dataJson are sensitive; a missing document is an error.
func (p *provider) Invoke(_ context.Context, req plugin.InvokeRequest) (plugin.InvokeResponse, error) {
	if req.Tok != "vault:kv/getSecretV2:getSecretV2" {
		return plugin.InvokeResponse{}, fmt.Errorf("stand-in vault provider: unsupported function %s", req.Tok)
	}
	c, err := p.api()
	if err != nil {
		return plugin.InvokeResponse{}, err
	}
	path := kvPath(req.Args, "data")
	query := ""
	if v := serve.Plain(req.Args["version"]); v.IsNumber() {
		query = fmt.Sprintf("?version=%d", int(v.NumberValue()))
	}
	resp, err := c.call("GET", path+query, nil, "")
	if isStatus(err, http.StatusNotFound) {
		return plugin.InvokeResponse{}, fmt.Errorf("no secret found at %q", path)
	}
	if err != nil {
		return plugin.InvokeResponse{}, fmt.Errorf("error reading secret %q from Vault: %w", path, err)
	}
	body, _ := resp["data"].(map[string]any)
	data, _ := body["data"].(map[string]any)
	meta, _ := body["metadata"].(map[string]any)
	raw, err := json.Marshal(data)
	if err != nil {
		return plugin.InvokeResponse{}, err
	}
	flat := resource.PropertyMap{}
	for k, v := range data {
		flat[resource.PropertyKey(k)] = resource.NewStringProperty(fmt.Sprint(v))
	}
	out := resource.PropertyMap{
		"id": resource.NewStringProperty(path), "mount": req.Args["mount"], "name": req.Args["name"],
		"path":     resource.NewStringProperty(path),
		"dataJson": resource.MakeSecret(resource.NewStringProperty(string(raw))),
		"data":     resource.MakeSecret(resource.NewObjectProperty(flat)),
	}
	if v, ok := meta["version"].(float64); ok {
		out["version"] = resource.NewNumberProperty(v)
	}
	for _, k := range []string{"created_time", "deletion_time"} {
		if v, ok := meta[k].(string); ok {
			out[resource.PropertyKey(camel(k))] = resource.NewStringProperty(v)
		}
	}
	if v, ok := meta["destroyed"].(bool); ok {
		out["destroyed"] = resource.NewBoolProperty(v)
	}
	return plugin.InvokeResponse{Properties: out}, nil
}

func camel(s string) string {
	parts := strings.Split(s, "_")
	for i := 1; i < len(parts); i++ {
		parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
	}
	return strings.Join(parts, "")
}

func createSecretID(c *client, _ string, in resource.PropertyMap) (resource.ID, resource.PropertyMap, error) {
	body := map[string]any{"metadata": str(in, "metadata")}
	if cidrs := strList(in, "cidrLists"); len(cidrs) > 0 {
		body["cidr_list"] = strings.Join(cidrs, ",")
	}
	for f, vault := range map[string]string{"ttl": "ttl", "numUses": "num_uses"} {
		if v := serve.Plain(in[resource.PropertyKey(f)]); v.IsNumber() && v.NumberValue() != 0 {
			body[vault] = int(v.NumberValue())
		}
	}
	path := rolePath(in) + "/secret-id"
	if s := str(in, "secretId"); s != "" {
		path, body["secret_id"] = rolePath(in)+"/custom-secret-id", s
	}
	wrapTTL := str(in, "wrappingTtl")
	resp, err := c.call("POST", path, body, wrapTTL)
	if err != nil {
		return "", nil, err
	}
	outs := map[string]string{"backend": backendOf(in)}
	var accessor string
	if wrapTTL != "" {
		wrap, _ := resp["wrap_info"].(map[string]any)
		if boolean(in, "withWrappedAccessor") {
			accessor, _ = wrap["wrapped_accessor"].(string)
		} else {
			accessor, _ = wrap["accessor"].(string)
		}
		outs["wrappingToken"], _ = wrap["token"].(string)
		outs["wrappingAccessor"] = accessor
	} else {
		data, _ := resp["data"].(map[string]any)
		accessor, _ = data["secret_id_accessor"].(string)
		outs["secretId"], _ = data["secret_id"].(string)
	}
	outs["accessor"] = accessor
	id := fmt.Sprintf("backend=%s::role=%s::accessor=%s", backendOf(in), str(in, "roleName"), accessor)
	out := withOutputs(in, outs)
	if wrapTTL != "" && !boolean(in, "withWrappedAccessor") {
		return resource.ID(id), out, nil // upstream's Read learns nothing more of a wrapped token
	}
	// Upstream's Create ends in Read, which looks the secret_id up and keeps its ttl and num_uses.
	look, err := c.call("POST", rolePath(in)+"/secret-id-accessor/lookup", map[string]any{"secret_id_accessor": accessor}, "")
	if err != nil {
		return "", nil, err
	}
	data, _ := look["data"].(map[string]any)
	for f, vault := range map[string]string{"ttl": "secret_id_ttl", "numUses": "secret_id_num_uses"} {
		n, _ := data[vault].(float64)
		out[resource.PropertyKey(f)] = resource.NewNumberProperty(n)
	}
	return resource.ID(id), out, nil
}

// updateRole is upstream's approleAuthBackendRoleUpdate: only the fields whose config differs
// from state (d.HasChange; approleAuthBackendRoleUpdateFields and updateTokenFields with create
// false), then Read. ignoreChanges keys are not changes: the bridge drops them from the diff it
// applies (pkg/tfbridge/provider.go Update, newIgnoreChanges).
func updateRole(c *client, req plugin.UpdateRequest) (resource.PropertyMap, error) {
	news, path := req.NewInputs, string(req.ID)
	var changed []string
	for _, k := range roleInputs {
		if slices.Contains(req.IgnoreChanges, k) {
			continue
		}
		key := resource.PropertyKey(k)
		was := req.OldOutputs[key] // HasChange: state against the planned new state
		if slices.Contains(roleReadBack, k) {
			if !sortedSet(was).DeepEquals(sortedSet(news[key])) {
				changed = append(changed, k)
			}
			continue
		}
		if !serve.Plain(was).DeepEquals(serve.Plain(news[key])) {
			changed = append(changed, k)
		}
	}
	roleID, err := writeRole(c, path, news, changed, true)
	if err != nil {
		return nil, err
	}
	out := withOutputs(news, map[string]string{"roleId": roleID, "backend": backendOf(news)})
	// Keep the state's read-back lists for ignored keys; Read refreshes them from Vault.
	for _, k := range roleReadBack {
		out[resource.PropertyKey(k)] = req.OldOutputs[resource.PropertyKey(k)]
	}
	return readRoleCIDRs(c, path, news, out)
}

// readRoleCIDRs is the CIDR part of upstream's approleAuthBackendRoleRead: secret_id_bound_cidrs
// as Vault returns them, token_bound_cidrs through handleCIDRField (vault/auth_token.go), which
// puts back the /32 or /128 Vault strips from one address unless the config has it without.
func readRoleCIDRs(c *client, path string, config, state resource.PropertyMap) (resource.PropertyMap, error) {
	resp, err := c.call("GET", path, nil, "")
	if err != nil {
		return nil, err
	}
	data, _ := resp["data"].(map[string]any)
	out := state.Copy()
	list := func(k string) []string {
		var l []string
		raw, _ := data[k].([]any)
		for _, v := range raw {
			s, _ := v.(string)
			l = append(l, s)
		}
		return l
	}
	configured := strList(config, "tokenBoundCidrs")
	var token []string
	for _, a := range list("token_bound_cidrs") {
		if !slices.Contains(configured, a) && !strings.Contains(a, "/") {
			if strings.Contains(a, ":") {
				a += "/128"
			} else {
				a += "/32"
			}
		}
		token = append(token, a)
	}
	out["tokenBoundCidrs"] = strArray(token)
	out["secretIdBoundCidrs"] = strArray(list("secret_id_bound_cidrs"))
	return out, nil
}

// writeEndpoint is upstream's genericEndpointResourceWrite: the data as is, then Read.
func writeEndpoint(c *client, in resource.PropertyMap) (resource.PropertyMap, error) {
	var data map[string]any
	if err := json.Unmarshal([]byte(str(in, "dataJson")), &data); err != nil {
		return nil, fmt.Errorf("data_json %q syntax error: %w", str(in, "dataJson"), err)
	}
	if _, err := c.call("POST", str(in, "path"), data, ""); err != nil {
		return nil, fmt.Errorf("error writing to Vault: %w", err)
	}
	out := in.Copy()
	out["dataJson"] = resource.NewStringProperty(normalizeJSON(str(in, "dataJson"))) // its StateFunc
	out["writeDataJson"] = resource.NewStringProperty("null")
	out["writeData"] = resource.NewObjectProperty(resource.PropertyMap{})
	read, err := readEndpoint(c, out)
	if read == nil && err == nil {
		return nil, fmt.Errorf("vault: %s: nothing to read back after the write", str(in, "path"))
	}
	return read, err
}

// readEndpoint is upstream's genericEndpointResourceRead: unless disableRead, GET the path (gone:
// nil, out of state) and set dataJson to what Vault returns, only the keys dataJson already has
// when ignoreAbsentFields.
func readEndpoint(c *client, state resource.PropertyMap) (resource.PropertyMap, error) {
	if boolean(state, "disableRead") {
		return state, nil
	}
	resp, err := c.call("GET", str(state, "path"), nil, "")
	if isStatus(err, http.StatusNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("error reading %s from Vault: %w", str(state, "path"), err)
	}
	data, _ := resp["data"].(map[string]any)
	relevant := data
	if boolean(state, "ignoreAbsentFields") {
		supplied := map[string]any{}
		if err := json.Unmarshal([]byte(str(state, "dataJson")), &supplied); err != nil {
			return nil, fmt.Errorf("data_json %q syntax error: %w", str(state, "dataJson"), err)
		}
		for k, v := range data {
			if _, ok := supplied[k]; ok {
				supplied[k] = v
			}
		}
		relevant = supplied
	}
	raw, err := json.Marshal(relevant)
	if err != nil {
		return nil, err
	}
	out := state.Copy()
	out["dataJson"] = resource.NewStringProperty(string(raw))
	return out, nil
}

// normalizeJSON is upstream's normalizeDataJSON (vault/resource_generic_secret.go): unmarshal
// into a map and marshal again, so keys come sorted and spacing goes.
func normalizeJSON(s string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func strArray(l []string) resource.PropertyValue {
	arr := []resource.PropertyValue{}
	for _, s := range l {
		arr = append(arr, resource.NewStringProperty(s))
	}
	return resource.NewArrayProperty(arr)
}

// sortedSet is a TypeSet of strings as SDKv2 compares it: unset is empty, order does not count.
func sortedSet(v resource.PropertyValue) resource.PropertyValue {
	m := resource.PropertyMap{"v": v}
	return strArray(strList(m, "v"))
}

func falseIfNull(v resource.PropertyValue) resource.PropertyValue {
	if p := serve.Plain(v); p.IsBool() {
		return p
	}
	return resource.NewBoolProperty(false)
}

// writeRole writes the given fields of the role (all on create; the changed ones on update).
func writeRole(c *client, path string, in resource.PropertyMap, fields []string, update bool) (string, error) {
	body := map[string]any{}
	for _, k := range fields {
		if k == "backend" || k == "roleName" || k == "roleId" {
			continue
		}
		v := serve.Plain(in[resource.PropertyKey(k)])
		switch {
		case !v.IsNull():
			body[snake(k)] = v.Mappable()
		case update && slices.Contains(roleReadBack, k):
			// A list removed from the config is sent empty (d.Get of an unset set), which clears it.
			body[snake(k)] = []any{}
		}
	}
	if _, err := c.call("POST", path, body, ""); err != nil {
		return "", err
	}
	if id := str(in, "roleId"); id != "" {
		if _, err := c.call("POST", path+"/role-id", map[string]any{"role_id": id}, ""); err != nil {
			return "", err
		}
		return id, nil
	}
	resp, err := c.call("GET", path+"/role-id", nil, "")
	if err != nil {
		return "", err
	}
	data, _ := resp["data"].(map[string]any)
	id, _ := data["role_id"].(string)
	return id, nil
}

func writeKV(c *client, in resource.PropertyMap) (resource.PropertyMap, error) {
	var data map[string]any
	if err := json.Unmarshal([]byte(str(in, "dataJson")), &data); err != nil {
		return nil, fmt.Errorf("dataJson is not a JSON object: %w", err)
	}
	body := map[string]any{"data": data}
	if o := plainMap(in, "options"); len(o) > 0 {
		body["options"] = o
	}
	resp, err := c.call("POST", kvPath(in, "data"), body, "")
	if err != nil {
		return nil, err
	}
	out := in.Copy()
	flat := resource.PropertyMap{}
	for k, v := range data {
		flat[resource.PropertyKey(k)] = resource.NewStringProperty(fmt.Sprint(v))
	}
	out["data"] = resource.NewObjectProperty(flat)
	out["path"] = resource.NewStringProperty(kvPath(in, "data"))
	meta, _ := resp["data"].(map[string]any)
	out["metadata"] = resource.NewObjectProperty(resource.NewPropertyMapFromMap(map[string]any{
		"version": fmt.Sprint(meta["version"]), "created_time": fmt.Sprint(meta["created_time"]),
	}))
	return out, nil
}

// client is a minimal Vault HTTP API client.
type client struct {
	addr, token string
	http        *http.Client
}

func (c *client) call(method, path string, body any, wrapTTL string) (map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	url := strings.TrimRight(c.addr, "/") + "/v1/" + strings.TrimLeft(path, "/")
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Vault-Token", c.token)
	if wrapTTL != "" {
		req.Header.Set("X-Vault-Wrap-TTL", wrapTTL)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("vault: %s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(bytes.TrimSpace(raw)) > 0 {
		_ = json.Unmarshal(raw, &out)
	}
	if resp.StatusCode >= 400 {
		return nil, &apiError{status: resp.StatusCode, msg: fmt.Sprintf("vault: %s %s: code %d, errors: %v", method, url, resp.StatusCode, out["errors"])}
	}
	return out, nil
}

type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func isStatus(err error, status int) bool {
	var e *apiError
	return errors.As(err, &e) && e.status == status
}

// accessor reads the accessor of mount path from a listing of sys/mounts or sys/auth.
func (c *client) accessor(list, path string) (string, error) {
	resp, err := c.call("GET", list, nil, "")
	if err != nil {
		return "", err
	}
	data, _ := resp["data"].(map[string]any)
	m, _ := data[strings.Trim(path, "/")+"/"].(map[string]any)
	acc, _ := m["accessor"].(string)
	return acc, nil
}

func str(m resource.PropertyMap, k string) string { s, _ := serve.Str(m, k); return s }

func boolean(m resource.PropertyMap, k string) bool {
	v := serve.Plain(m[resource.PropertyKey(k)])
	return v.IsBool() && v.BoolValue()
}

func strList(m resource.PropertyMap, k string) []string {
	v := serve.Plain(m[resource.PropertyKey(k)])
	var out []string
	if v.IsArray() {
		for _, e := range v.ArrayValue() {
			out = append(out, serve.Plain(e).StringValue())
		}
	}
	sort.Strings(out)
	return out
}

func plainMap(m resource.PropertyMap, k string) map[string]any {
	v := serve.Plain(m[resource.PropertyKey(k)])
	if !v.IsObject() {
		return nil
	}
	out := map[string]any{}
	for key, e := range v.ObjectValue() {
		out[string(key)] = serve.Plain(e).Mappable()
	}
	return out
}

func backendOf(m resource.PropertyMap) string {
	return strings.Trim(firstOf(str(m, "backend"), "approle"), "/")
}

func rolePath(m resource.PropertyMap) string {
	return "auth/" + backendOf(m) + "/role/" + strings.Trim(str(m, "roleName"), "/")
}

func kvPath(m resource.PropertyMap, which string) string {
	return strings.Trim(str(m, "mount"), "/") + "/" + which + "/" + strings.Trim(str(m, "name"), "/")
}

func withOutputs(in resource.PropertyMap, outs map[string]string) resource.PropertyMap {
	out := in.Copy()
	for k, v := range outs {
		out[resource.PropertyKey(k)] = resource.NewStringProperty(v)
	}
	return out
}

// markSecret marks the outputs upstream's schema calls sensitive, and every computed output when
// an input was secret.
func markSecret(out resource.PropertyMap, keys []string) resource.PropertyMap {
	for _, k := range keys {
		pk := resource.PropertyKey(k)
		if v, ok := out[pk]; ok && !v.IsNull() && !v.IsSecret() {
			out[pk] = resource.MakeSecret(v)
		}
	}
	return out
}

func snake(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
