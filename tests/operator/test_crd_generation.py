"""The generated CRDs are the pydantic types, and the files in the repo are current."""

from tuneroute_operator import crd


def test_generated_crd_files_are_current():
    stale = crd.stale_files()
    assert not stale, f"regenerate with `python -m tuneroute_operator.crd`: {stale}"


def _walk(node, path="spec"):
    if isinstance(node, dict):
        if "type" in node or "properties" in node:
            yield path, node
        for key, value in (node.get("properties") or {}).items():
            yield from _walk(value, f"{path}.{key}")
        if "items" in node:
            yield from _walk(node["items"], f"{path}[]")


def test_every_spec_field_has_a_description_for_kubectl_explain():
    for make in (crd.finetunejob_crd, crd.modelroute_crd):
        schema = make()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        for section in ("spec", "status"):
            missing = [
                p for p, node in _walk(schema[section], section) if not node.get("description") and not p.endswith("[]")
            ]
            assert not missing, f"{make.__name__}: fields without description: {missing}"


def test_schema_uses_only_structural_openapi_keywords():
    allowed = {
        "type",
        "description",
        "properties",
        "required",
        "items",
        "enum",
        "default",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "maxProperties",
        "minProperties",
        "additionalProperties",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-preserve-unknown-fields",
        "nullable",
    }
    for make in (crd.finetunejob_crd, crd.modelroute_crd):
        root = make()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(root["properties"]["spec"]):
            assert set(node) <= allowed, f"{path}: {set(node) - allowed}"


def test_nested_sections_default_to_empty_objects_so_the_api_server_fills_their_defaults():
    spec = crd.finetunejob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["lora"]["default"] == {}
    assert spec["properties"]["lora"]["properties"]["rank"]["default"] == 16
    assert set(spec["required"]) == {"baseModel", "dataset", "output"}


def test_spec_is_immutable_except_suspend():
    spec = crd.finetunejob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {
        name: [r["rule"] for r in prop.get("x-kubernetes-validations", [])] for name, prop in spec["properties"].items()
    }
    assert "self == oldSelf" not in rules["suspend"]
    assert all("self == oldSelf" in r for name, r in rules.items() if name != "suspend")
