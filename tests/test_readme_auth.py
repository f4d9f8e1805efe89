"""The README's Authentication section stays true: its TOML blocks load, its seed examples are the seed's, and
its openssl recipe is the one tests/transport/test_*_gajim_recipe.py run (issue 14). Pure: no database."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.opensslcli import recipe_commands
from tests.seed_configs import SEED_EXAMPLE_1, SEED_EXAMPLE_2
from xmppauth.config import Config, parse_config

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def auth_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Authentication\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(auth_section()) if lang == language]


def load(text: str) -> Config:
    return parse_config(tomllib.loads(text), "README.md", base_dir="/etc/xmppauth")


def test_the_section_has_the_seeds_examples_and_more():
    assert len(blocks("toml")) >= 4 and len(blocks("sh")) == 1


@pytest.mark.parametrize("index", range(len(blocks("toml"))))
def test_every_toml_block_loads(index):
    config = load(blocks("toml")[index])
    assert config.auth.methods and config.auth.sasl_mechanisms


@pytest.mark.parametrize("seed", [SEED_EXAMPLE_1, SEED_EXAMPLE_2], ids=["certificate_only", "rdbms_and_pki"])
def test_the_seeds_examples_are_in_it_as_the_seed_has_them(seed):
    assert load(seed) in [load(block) for block in blocks("toml")]


def test_the_recipe_is_the_one_the_tests_run():
    readme = [line.split(" #", 1)[0].split() for line in blocks("sh")[0].splitlines() if line.strip()]
    assert readme == recipe_commands()


def test_the_recipe_config_logs_in_by_common_name():
    (recipe_config,) = [load(block) for block in blocks("toml") if "rootCA.crt" in block]
    assert recipe_config.auth.sasl_external == ("standard", "common_name")
    assert recipe_config.listen_c2s[0].tls.cacertfile == "/etc/xmppauth/rootCA.crt"
