"""infra/terraform: syntax and internal consistency, offline.

`terraform validate` needs the providers, which `terraform init` downloads from a
registry this machine cannot reach; what can be checked here is checked here.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from assets_tests.ops.deploy_files import INFRA, ROOT

TF_FILES = sorted(INFRA.glob("*.tf"))


def _all_tf() -> str:
    return "\n".join(p.read_text() for p in TF_FILES)


def _strip_comments(text: str) -> str:
    return re.sub(r"(?m)^\s*#.*$|\s#[^\n\"]*$", "", text)


def test_terraform_files_exist():
    assert {p.name for p in TF_FILES} >= {"versions.tf", "variables.tf", "main.tf", "outputs.tf"}


def test_terraform_fmt_check():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform binary not installed")
    # fmt parses every file (syntax errors fail it) and needs no provider or network
    proc = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive", str(INFRA)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hcl_parses_with_python_hcl2():
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is not installed")
    for path in TF_FILES:
        with open(path) as f:
            assert hcl2.load(f) is not None, path


def test_braces_and_quotes_balance():
    # the cheapest syntax check, for machines with neither terraform nor python-hcl2
    for path in TF_FILES:
        text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', _strip_comments(path.read_text()))
        for open_, close in ("{}", "[]", "()"):
            assert text.count(open_) == text.count(close), f"{path.name}: {open_}{close} unbalanced"


def test_variables_used_are_declared_and_declared_are_used():
    text = _all_tf()
    declared = set(re.findall(r'^variable "([a-z0-9_]+)"', text, re.M))
    used = set(re.findall(r"\bvar\.([a-z0-9_]+)", _strip_comments(text)))
    assert used - declared == set(), f"undeclared: {used - declared}"
    assert declared - used == set(), f"declared, never used: {declared - used}"
    for block in re.findall(r'^variable "[a-z0-9_]+" \{(.*?)^\}', text, re.M | re.S):
        assert "description" in block and "type" in block


def test_references_point_at_declared_resources_and_data_sources():
    text = _strip_comments(_all_tf())
    resources = set(re.findall(r'^resource "([a-z0-9_]+)" "([a-z0-9_]+)"', text, re.M))
    data = set(re.findall(r'^data "([a-z0-9_]+)" "([a-z0-9_]+)"', text, re.M))
    locals_ = set(re.findall(r"^\s+([a-z0-9_]+)\s*=", text[text.index("locals {") :].split("\n}")[0], re.M))
    for kind, name in re.findall(r"(?<!data\.)\b((?:aws|kafka)_[a-z0-9_]+)\.([a-z0-9_]+)\b", text):
        if kind.startswith("aws_") and name in ("json", "arn", "id"):
            continue
        assert (kind, name) in resources, f"{kind}.{name} is not declared"
    for kind, name in re.findall(r"\bdata\.([a-z0-9_]+)\.([a-z0-9_]+)", text):
        assert (kind, name) in data, f"data.{kind}.{name} is not declared"
    for name in re.findall(r"\blocal\.([a-z0-9_]+)", text):
        assert name in locals_, f"local.{name} is not declared"
    # every declared resource and data source is used by something or is a root output
    outputs = (INFRA / "outputs.tf").read_text()
    assert "aws_s3_bucket.lake" in outputs and "aws_ecr_repository.user_code" in outputs


def test_no_secret_values_or_account_ids_in_deployment_files():
    paths = [
        *TF_FILES,
        ROOT / "dagster_cloud.yaml",
        ROOT / "workspace.yaml",
        *sorted((ROOT / "docker").iterdir()),
    ]
    for path in paths:
        if path.is_dir():
            continue
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), f"{path}: AWS access key"
        assert not re.search(r"\b\d{12}\b", text), f"{path}: looks like an AWS account id"
        assert not re.search(r"(?i)-----BEGIN [A-Z ]*PRIVATE KEY", text), f"{path}: private key"
        for m in re.finditer(r"(?im)^[ \t]*[\w.-]*(password|secret)[\w.-]*[ \t]*[:=][ \t]*(.*)$", text):
            value = m.group(2).strip().strip("\"'")
            assert value == "" or value.startswith(("${", "{", "env", "var.")) or "env" in value, (
                f"{path}: literal value for {m.group(0).strip()!r}"
            )
