import tomllib

import pytest
from repo import ROOT

from atlas.config import AtlasConfig, load_config
from atlas.errors import AtlasError

CONFIGS = ROOT / "jobs" / "configs"


def test_default_toml_documents_the_embedded_default():
    assert load_config(CONFIGS / "default.toml") == AtlasConfig()


def test_production_config_is_valid_and_names_the_real_models():
    cfg = load_config(CONFIGS / "production.toml")
    assert cfg.models.clip == "open_clip:ViT-bigG-14/laion2b_s39b_b160k"
    assert cfg.models.decoder == "kandinsky-community/kandinsky-2-2-decoder"
    assert cfg.sae.expansion_factor == 64


@pytest.mark.parametrize(
    "text, message",
    [
        ("[sae]\nexpansion = 4\n", "unknown key 'sae.expansion'"),
        ("[nonsense]\nx = 1\n", "unknown key 'nonsense'"),
        ("[render]\nsteps = 0\n", "render.steps: Input should be greater than or equal to 1 (got 0)"),
        ("[compute]\ndevice = 'tpu'\n", "compute.device"),
        ("[directions]\ntemplate = 'a {word}'\n", "directions.template"),
        ("[sae\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(AtlasError) as e:
        load_config(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(AtlasError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "c.toml").write_text('[data]\nsource = "imgs"\n')
    assert load_config(tmp_path / "c.toml").data.source == str(tmp_path / "imgs")
    assert tomllib.loads((CONFIGS / "default.toml").read_text())["data"]["source"] == "builtin:shapes"
