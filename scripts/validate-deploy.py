#!/usr/bin/env python3
"""Validates the deploy files offline; exits non-zero naming every problem.

- Renders every kustomize overlay under k8s/overlays (and the base) with a small renderer
  of the kustomize features these manifests use (resources, components, namespace, labels,
  JSON 6902 and `$patch: delete` patches, images). A feature it does not know is an error,
  not silently skipped: extend it, or the manifests, so that CI still checks them.
- Validates each rendered Kubernetes object against the Kubernetes OpenAPI schemas
  (`kubernetes-validate`, strict: unknown fields are errors), and the KEDA objects and
  docker-compose.yml against the JSON schemas in k8s/schemas (`check-jsonschema`).
- Checks what schemas cannot: every Deployment's containers have CPU and memory requests
  and limits, every ConfigMap/Secret a pod reads and every Deployment a ScaledObject or
  HPA scales exists in the same render, and no two objects share kind and name.

Needs: PyYAML, kubernetes-validate, check-jsonschema (.ci/run installs them).
Usage: scripts/validate-deploy.py [--k8s-version 1.31.0]
       scripts/validate-deploy.py --print-env   (PyYAML only)

--print-env prints, as one JSON object, the environment each deployment gives the sluice
processes: per rendered tree the ConfigMap sluice-config plus the Secret sluice-secrets
(when rendered), and for docker-compose.yml the x-sluice-env block (and, under
"docker-compose.yml sandbox", the sandbox's environment) with every `${VAR:-default}` at
its default. tests/deploy_settings.rs loads each into the services'
settings, connector registry and destinations, so a key the services refuse fails CI.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
K8S = os.path.join(ROOT, "k8s")
SCHEMAS = os.path.join(K8S, "schemas")
# Kinds validated against a JSON schema of their own instead of Kubernetes' built-ins.
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.json",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "resources", "components", "namespace", "labels", "patches", "images",
}


class RenderError(Exception):
    """A kustomization this renderer cannot render (or that kustomize would refuse)."""


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def pointer_parts(path):
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(doc, ops, where):
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        parts = pointer_parts(path)
        parent = doc
        for p in parts[:-1]:
            if isinstance(parent, list):
                parent = parent[int(p)]
            elif isinstance(parent, dict) and p in parent:
                parent = parent[p]
            else:
                raise RenderError(f"{where}: {kind} {path}: no {p!r} in the target")
        last = parts[-1]
        if kind in ("replace", "remove", "test"):
            exists = (isinstance(parent, dict) and last in parent) or (
                isinstance(parent, list) and last.isdigit() and int(last) < len(parent)
            )
            if not exists:
                raise RenderError(f"{where}: {kind} {path}: the target has no such field")
        if kind == "add" or kind == "replace":
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                del parent[last]
        elif kind == "test":
            if parent[last] != op.get("value"):
                raise RenderError(f"{where}: test {path} failed")
        else:
            raise RenderError(f"{where}: unsupported JSON patch op {kind!r}")


def strategic_merge(target, patch):
    """Merges maps recursively and lists of named maps by name; other lists are replaced."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value)
        elif (
            isinstance(value, list)
            and isinstance(target.get(key), list)
            and all(isinstance(v, dict) and "name" in v for v in value + target[key])
        ):
            by_name = {v["name"]: v for v in target[key]}
            for item in value:
                if item["name"] in by_name:
                    strategic_merge(by_name[item["name"]], item)
                else:
                    target[key].append(item)
        else:
            target[key] = value


def matches(obj, target):
    group, _, _ = obj.get("apiVersion", "").rpartition("/")
    for key, actual in (
        ("kind", obj.get("kind")),
        ("name", obj.get("metadata", {}).get("name")),
        ("group", group),
    ):
        if key in target and target[key] != actual:
            return False
    unknown = set(target) - {"kind", "name", "group", "version"}
    if unknown:
        raise RenderError(f"patch target selector {sorted(unknown)} is not supported")
    return True


def apply_patches(objects, patches, where, deleted):
    for i, entry in enumerate(patches or []):
        here = f"{where} patch {i + 1}"
        if "path" in entry:
            with open(os.path.join(os.path.dirname(where), entry["path"]), encoding="utf-8") as f:
                text = f.read()
        elif "patch" in entry:
            text = entry["patch"]
        else:
            raise RenderError(f"{here}: neither patch nor path")
        body = yaml.safe_load(text)
        target = entry.get("target")
        if isinstance(body, list):
            if not target:
                raise RenderError(f"{here}: a JSON 6902 patch needs a target")
            hits = [o for o in objects if matches(o, target)]
            if not hits:
                raise RenderError(f"{here}: target {target} matches nothing")
            for obj in hits:
                json6902(obj, body, here)
        elif isinstance(body, dict):
            sel = dict(target or {})
            sel.setdefault("kind", body.get("kind"))
            sel.setdefault("name", body.get("metadata", {}).get("name"))
            hits = [o for o in objects if matches(o, sel)]
            if not hits:
                raise RenderError(f"{here}: target {sel} matches nothing")
            if body.get("$patch") == "delete":
                objects[:] = [o for o in objects if not any(o is h for h in hits)]
                deleted.update((h["kind"], h["metadata"]["name"]) for h in hits)
            else:
                for obj in hits:
                    strategic_merge(obj, body)
        else:
            raise RenderError(f"{here}: unreadable patch")


def add_labels(obj, pairs, include_selectors, include_templates):
    obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    spec = obj.get("spec") or {}
    if include_templates and isinstance(spec.get("template"), dict):
        spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if include_selectors:
        raise RenderError("labels with includeSelectors: true are not supported")


def render(directory, deleted, stack=()):
    """Renders the kustomization in `directory`; returns its objects. Objects that a patch
    deletes are added to `deleted` (kind, name): an overlay deletes the placeholder Secret
    when a secret manager provides it, so pods may still read it."""
    if directory in stack:
        raise RenderError(f"{directory}: cycle")
    path = os.path.join(directory, "kustomization.yaml")
    where = os.path.relpath(path, ROOT)
    with open(path, encoding="utf-8") as f:
        k = yaml.safe_load(f)
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise RenderError(f"{where}: fields this renderer does not support: {sorted(unknown)}")
    objects = []
    for res in k.get("resources", []):
        full = os.path.normpath(os.path.join(directory, res))
        if os.path.isdir(full):
            objects += render(full, deleted, stack + (directory,))
        elif os.path.isfile(full):
            objects += load_yaml_docs(full)
        else:
            raise RenderError(f"{where}: resource {res} does not exist")
    for comp in k.get("components", []):
        full = os.path.normpath(os.path.join(directory, comp))
        with open(os.path.join(full, "kustomization.yaml"), encoding="utf-8") as f:
            ck = yaml.safe_load(f)
        if ck.get("kind") != "Component":
            raise RenderError(f"{where}: component {comp} is not a Component")
        unknown = set(ck) - KUSTOMIZATION_KEYS
        if unknown:
            raise RenderError(f"{comp}: unsupported fields {sorted(unknown)}")
        for res in ck.get("resources", []):
            objects += load_yaml_docs(os.path.join(full, res))
        apply_patches(objects, ck.get("patches"), os.path.join(full, "kustomization.yaml"), deleted)
    apply_patches(objects, k.get("patches"), path, deleted)
    if "namespace" in k:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for entry in k.get("labels", []):
        for obj in objects:
            add_labels(
                obj,
                entry["pairs"],
                entry.get("includeSelectors", False),
                entry.get("includeTemplates", False),
            )
    for image in k.get("images", []):
        for obj in objects:
            pod = (obj.get("spec") or {}).get("template", {}).get("spec", {})
            if obj.get("kind") == "Pod":
                pod = obj.get("spec", {})
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = c["image"].partition(":")
                if name == image["name"]:
                    new = image.get("newName", name)
                    c["image"] = f"{new}:{image.get('newTag', tag or 'latest')}"
    return objects


def pod_spec(obj):
    spec = obj.get("spec") or {}
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return spec.get("template", {}).get("spec", {})
    return None


def semantic_checks(name, objects, deleted):
    problems = []
    seen = {}
    for obj in objects:
        key = (obj.get("kind"), obj.get("metadata", {}).get("name"))
        if key in seen:
            problems.append(f"{name}: two objects are {key[0]}/{key[1]}")
        seen[key] = obj
    for obj in objects:
        label = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        pod = pod_spec(obj)
        if pod is not None:
            for c in pod.get("containers", []):
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    for what in ("cpu", "memory"):
                        if what not in res.get(part, {}):
                            problems.append(f"{label}: container {c['name']} has no {part}.{what}")
                for ref in c.get("envFrom", []):
                    for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        wanted = (kind, ref.get(field, {}).get("name"))
                        if field in ref and wanted not in seen and wanted not in deleted:
                            problems.append(f"{label}: reads {kind} {wanted[1]}, which is not rendered")
        if obj["kind"] in ("ScaledObject", "HorizontalPodAutoscaler"):
            target = obj["spec"]["scaleTargetRef"]
            if (target.get("kind", "Deployment"), target["name"]) not in seen:
                problems.append(f"{label}: scales {target['name']}, which is not rendered")
            if obj["kind"] == "ScaledObject" and target.get("kind", "Deployment") == "Deployment":
                deployment = seen.get(("Deployment", target["name"]))
                if deployment and "replicas" in deployment["spec"]:
                    problems.append(
                        f"{label}: {target['name']} sets spec.replicas, which every apply would reset under KEDA"
                    )
            for trig in obj["spec"].get("triggers", []):
                ref = trig.get("authenticationRef", {}).get("name")
                if ref and ("TriggerAuthentication", ref) not in seen:
                    problems.append(f"{label}: trigger authentication {ref} is not rendered")
    return problems


def check_jsonschema(schema, documents, label):
    """Validates documents (dicts) against a schema file with check-jsonschema."""
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, doc in enumerate(documents):
            # Named after the object, so a complaint names it.
            name = doc.get("metadata", {}).get("name", "unnamed")
            f = os.path.join(tmp, f"{i}-{doc.get('kind')}-{name}.json")
            with open(f, "w", encoding="utf-8") as out:
                json.dump(doc, out)
            files.append(f)
        return run_check_jsonschema(schema, files, label)


def run_check_jsonschema(schema, files, label):
    out = subprocess.run(
        ["check-jsonschema", "--schemafile", schema, *files],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return [f"{label}: {schema}: {out.stdout.strip()} {out.stderr.strip()}"]
    return []


def compose_env(block):
    """An environment block of docker-compose.yml (`x-sluice-env`, or a service's
    `environment`), every `${VAR:-default}` at its default."""
    import re

    with open(os.path.join(ROOT, "docker-compose.yml"), encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    values = compose[block] if block.startswith("x-") else compose["services"][block]["environment"]
    env = {}
    for key, value in values.items():
        env[key] = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))
        if "${" in env[key]:
            raise RenderError(f"docker-compose.yml: {key} uses a variable without a default")
    return env


def deploy_envs():
    envs = {
        "docker-compose.yml": compose_env("x-sluice-env"),
        # The sandbox reads SLUICE_SANDBOX__… variables, not the services' settings.
        "docker-compose.yml sandbox": compose_env("sandbox"),
    }
    trees = [os.path.join(K8S, "base")] + sorted(
        os.path.join(K8S, "overlays", d) for d in os.listdir(os.path.join(K8S, "overlays"))
    )
    base_secret = {}
    for obj in load_yaml_docs(os.path.join(K8S, "base", "secret.yaml")):
        base_secret.update(obj.get("stringData", {}))
    for tree in trees:
        env = {}
        deleted = set()
        for obj in render(tree, deleted):
            name = obj.get("metadata", {}).get("name")
            if obj.get("kind") == "ConfigMap" and name == "sluice-config":
                env.update(obj.get("data", {}))
            if obj.get("kind") == "Secret" and name == "sluice-secrets":
                env.update(obj.get("stringData", {}))
        # An overlay that leaves sluice-secrets to a secret manager gets the keys of the
        # base's placeholder Secret: they are what that manager must provide.
        if ("Secret", "sluice-secrets") in deleted:
            env = {**base_secret, **env}
        envs[os.path.relpath(tree, ROOT)] = env
    return envs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s-version", default="1.31.0")
    parser.add_argument("--print-env", action="store_true")
    args = parser.parse_args()
    if args.print_env:
        print(json.dumps(deploy_envs(), indent=1, sort_keys=True))
        return 0
    import kubernetes_validate

    problems = []
    trees = [os.path.join(K8S, "base")] + sorted(
        os.path.join(K8S, "overlays", d) for d in os.listdir(os.path.join(K8S, "overlays"))
    )
    for tree in trees:
        name = os.path.relpath(tree, ROOT)
        deleted = set()
        try:
            objects = render(tree, deleted)
        except (RenderError, KeyError, IndexError, ValueError, OSError, yaml.YAMLError) as e:
            problems.append(f"{name}: cannot render: {e}")
            continue
        custom = {}
        for obj in objects:
            label = f"{name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            key = (obj.get("apiVersion"), obj.get("kind"))
            if key in CUSTOM_SCHEMAS:
                custom.setdefault(key, []).append(obj)
                continue
            try:
                kubernetes_validate.validate(obj, args.k8s_version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                problems.append(f"{label}: {path}: {e.message}")
            except Exception as e:  # unknown kind or version: as much a manifest error
                problems.append(f"{label}: {e}")
        for key, docs in custom.items():
            problems += check_jsonschema(os.path.join(SCHEMAS, CUSTOM_SCHEMAS[key]), docs, f"{name}: {key[1]}")
        problems += semantic_checks(name, objects, deleted)
        print(f"{name}: {len(objects)} objects rendered and checked")
    problems += run_check_jsonschema(
        os.path.join(SCHEMAS, "compose-spec.json"), [os.path.join(ROOT, "docker-compose.yml")], "docker-compose.yml"
    )
    if problems:
        print(f"{len(problems)} problem(s) in the deploy files:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("deploy files: all valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
