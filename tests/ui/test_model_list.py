from sdstudio.ui.model_list import BUILTIN_LABEL, add_extra_model, model_choices
from sdstudio.ui.settings import open_settings


def test_choices_list_builtin_then_folder_then_added_files(qapp, home, tmp_path):
    models = home / "models"
    (models / "sub").mkdir(parents=True)
    for name in ("b.safetensors", "sub/a.safetensors", "notes.txt"):
        (models / name).write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere.safetensors"
    elsewhere.write_bytes(b"x")
    settings = open_settings()
    add_extra_model(settings, str(elsewhere))
    add_extra_model(settings, str(elsewhere))
    add_extra_model(settings, str(tmp_path / "deleted.safetensors"))
    choices = model_choices(models, settings)
    assert choices[0] == (BUILTIN_LABEL, "")
    assert [label for label, _ in choices[1:]] == ["a", "b", "elsewhere"]
    assert choices[-1][1] == str(elsewhere)


def test_empty_home_offers_only_the_builtin_model(qapp, home):
    assert model_choices(home / "models", open_settings()) == [(BUILTIN_LABEL, "")]
