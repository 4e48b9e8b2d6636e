"""%gemma / %%gemma on a real IPython InteractiveShell with the tiny model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError

import gemma_lab.magics
from gemma_lab.generation import Generation
from gemma_lab.scoring import Score
from gemma_lab.testing import ipython_shell, run_magic

CELL_FLAGS = ["--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed", "--stop",
              "--probs", "--attention", "--lens", "--attribute", "--target", "--score",
              "--chat", "--no-stream", "--no-interpolate", "-o VAR", "--format", "--layer",
              "--head", "--ablate", "--steer"]


@pytest.fixture
def shell(tiny_lab):
    shell = ipython_shell()
    gemma_lab.magics.use(tiny_lab)
    shell.run_line_magic("config", "GemmaMagics.stream_update_interval = 0")
    yield shell
    for name in ("max_new_tokens", "stream_update_interval", "format", "stream"):
        shell.run_line_magic("config", f"GemmaMagics.{name} = "
                             f"{gemma_magics(shell).trait_defaults(name)!r}")
    gemma_lab.magics.use(tiny_lab)


GEMMA = "application/vnd.gemma-lab.v1+json"


def gemma_magics(shell):
    return next(c for c in shell.configurables if isinstance(c, gemma_lab.magics.GemmaMagics))


def assert_one_line_error(run, *fragments):
    assert isinstance(run.error, UsageError), (run.error, run.stderr)
    # (a progress bar, a widget in notebooks, is text on stderr here)
    lines = [line for line in run.stderr.splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert run_magic("1 + 1").result.result == 2  # the shell is still usable


# --- loading the extension -------------------------------------------------------------------
def test_load_ext_registers_both_magics_and_imports_no_keras():
    code = textwrap.dedent("""
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "gemma_lab")
        magics = shell.magics_manager.magics
        assert "gemma" in magics["line"] and "gemma" in magics["cell"]
        assert "keras" not in sys.modules, "load_ext imported keras"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def test_use_and_current():
    lab = object()
    previous = gemma_lab.magics._state._current
    try:
        assert gemma_lab.magics.use(lab) is lab and gemma_lab.magics.current() is lab
    finally:
        gemma_lab.magics.use(previous)


# --- help and configuration ------------------------------------------------------------------
def test_help_lists_every_command_and_flag_with_its_default(shell):
    run = run_magic("%gemma help")
    assert run.error is None
    for flag in CELL_FLAGS:
        assert flag in run.stdout, flag
    for command in ("load", "info", "chat", "finetune", "adapters", "playground",
                    "attention", "finetune-panel", "interventions", "hooks", "--backend",
                    "--dtype", "--rank", "--lr", "%%gemma patch", "--over"):
        assert command in run.stdout, command
    assert "--max-new-tokens N    tokens to generate at most (default: 64)" in run.stdout
    assert "(default: text)" in run.stdout and "(default: float32)" in run.stdout
    assert run_magic("%gemma --help").stdout == run.stdout


def test_cell_help_shows_configured_defaults(shell):
    shell.run_line_magic("config", "GemmaMagics.max_new_tokens = 7")
    run = run_magic("%%gemma --help\nignored prompt")
    assert run.error is None and run.outputs == []
    assert "usage: %%gemma" in run.stdout
    assert "tokens to generate at most (default: 7)" in run.stdout


def test_config_sets_defaults(shell):
    shell.run_line_magic("config", "GemmaMagics.max_new_tokens = 3")
    shell.run_line_magic("config", "GemmaMagics.stream = False")
    run = run_magic("%%gemma -o g\nhello")
    assert run.error is None
    assert len(shell.user_ns["g"].steps) <= 3
    assert not any(output.update for output in run.outputs)  # not streamed


def test_config_rejects_a_bad_format(shell, caplog):
    run_magic("%config GemmaMagics.format = 'html'")  # %config logs the trait error
    assert gemma_magics(shell).format == "text"
    assert "expected any of ['text', 'markdown', 'code'], not the str 'html'" in caplog.text


# --- generation ------------------------------------------------------------------------------
def test_streaming_updates_one_display_in_place_then_shows_the_result(shell):
    run = run_magic("%%gemma --max-new-tokens 6 -o g\nhello world")
    assert run.error is None, run.stderr
    g = shell.user_ns["g"]
    assert isinstance(g, Generation) and g.prompt == "hello world"
    first, *updates = run.outputs
    assert not first.update and len(updates) >= 2
    assert all(u.update for u in updates)
    display_ids = {o.transient["display_id"] for o in run.outputs}
    assert len(display_ids) == 1  # one output area, updated in place
    assert updates[-2].data["text/plain"].endswith("▌")  # still streaming
    final = updates[-1].data
    assert "application/vnd.gemma-lab.v1+json" in final  # the rich result replaced the text
    assert final["text/plain"].startswith(g.text) or g.text in final["text/plain"]


def test_streaming_is_throttled(shell):
    shell.run_line_magic("config", "GemmaMagics.stream_update_interval = 60")
    run = run_magic("%%gemma --max-new-tokens 8\nhello")
    assert run.error is None
    assert len(run.outputs) == 2  # the opened area and the final result


def test_no_stream_displays_the_result_once(shell):
    run = run_magic("%%gemma --no-stream --max-new-tokens 4 -o g\nhello")
    assert run.error is None
    assert len(run.outputs) == 1 and not run.outputs[0].update
    assert "application/vnd.gemma-lab.v1+json" in run.outputs[0].data
    assert isinstance(shell.user_ns["g"], Generation)


def test_sampling_flags_reach_the_generation(shell):
    run = run_magic("%%gemma --max-new-tokens 5 --temperature 0.8 --top-k 7 --top-p 0.9 "
                    "--seed 3 -o g --no-stream\nhello")
    assert run.error is None
    g = shell.user_ns["g"]
    assert len(g.steps) <= 5
    assert g.metadata["sampler"] == {"name": "sample", "temperature": 0.8, "top_k": 7,
                                     "top_p": 0.9, "seed": 3}
    run_magic("%%gemma --max-new-tokens 5 --temperature 0.8 --top-k 7 --top-p 0.9 "
              "--seed 3 -o again --no-stream\nhello")
    assert shell.user_ns["again"].token_ids == g.token_ids  # same seed, same tokens


def test_stop_string_ends_generation(shell, tiny_lab):
    greedy = tiny_lab.generate("hello", max_new_tokens=12)
    stop = greedy.text[len(greedy.steps[0].text):][:1] or greedy.text[:1]
    assert stop, "the tiny model generated nothing"
    quoted = stop.replace("\\", "\\\\").replace("'", "'\"'\"'")
    run = run_magic(f"%%gemma --max-new-tokens 12 --stop '{quoted}' -o g\nhello")
    assert run.error is None, run.stderr
    g = shell.user_ns["g"]
    assert g.finish_reason == "stop_string" and stop not in g.text


def test_stop_accepts_escaped_newline():
    parsed = gemma_lab.magics.parse_cell("--stop '\\n' --stop END", gemma_lab.magics.CellArgs())
    assert parsed.stop == ("\n", "END")


def test_format_code_puts_the_text_in_the_next_cell(shell, monkeypatch):
    received = []
    monkeypatch.setattr(shell, "set_next_input", lambda text, replace=False: received.append(text))
    run = run_magic("%%gemma --format code --max-new-tokens 4 -o g\ndef add(a, b):")
    assert run.error is None
    assert received == [shell.user_ns["g"].text]


def test_format_markdown_renders_the_text(shell):
    run = run_magic("%%gemma --format markdown --max-new-tokens 4 -o g\n# Title")
    assert run.error is None
    assert run.outputs[-1].data["text/markdown"] == shell.user_ns["g"].text


def test_score_returns_a_score_of_the_cell_text(shell):
    run = run_magic("%%gemma --score -o s\nhello world")
    assert run.error is None
    s = shell.user_ns["s"]
    assert isinstance(s, Score) and s.text == "hello world"
    assert len(run.outputs) == 1 and "application/vnd.gemma-lab.v1+json" in run.outputs[0].data


def test_probs_adds_the_probability_figure(shell):
    run = run_magic("%%gemma --probs --no-stream --max-new-tokens 4 -o g\nhello")
    assert run.error is None, run.stderr
    assert "application/vnd.gemma-lab.v1+json" in run.outputs[0].data
    if hasattr(Generation, "figure"):
        assert any("application/vnd.plotly.v1+json" in o.data for o in run.outputs[1:])


# --- interpolation in cells --------------------------------------------------------------------
def test_cells_interpolate_names_out_and_results(shell):
    shell.user_ns["topic"] = "the moon"
    shell.user_ns["d"] = {"k": "value"}
    out = run_magic("'from Out'")
    count = shell.execution_count - 1
    run_magic("%%gemma --max-new-tokens 2 --no-stream -o first\nhello")
    run = run_magic(f"%%gemma --max-new-tokens 2 --no-stream -o g\n"
                    f"{{topic}} {{d['k']}} {{Out[{count}]}} [{{first}}] {{{{x}}}}")
    assert out.error is None and run.error is None, run.stderr
    first = shell.user_ns["first"].text
    assert shell.user_ns["g"].prompt == f"the moon value from Out [{first}] {{x}}"


def test_no_interpolate_keeps_the_text_literal(shell):
    run = run_magic("%%gemma --no-interpolate --no-stream --max-new-tokens 2 -o g\n{a+b} {{x}}")
    assert run.error is None
    assert shell.user_ns["g"].prompt == "{a+b} {{x}}"


# --- errors: one line each, and the shell keeps working ----------------------------------------
@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ("%%gemma --bogus\nhello", ["unrecognized arguments: --bogus", "%%gemma --help"]),
        ("%%gemma --max-new-tokens 0\nhello", ["--max-new-tokens", "1..8192"]),
        ("%%gemma --max-new-tokens many\nhello", ["--max-new-tokens", "'many'"]),
        ("%%gemma --temperature -1\nhello", ["--temperature", "≥ 0"]),
        ("%%gemma --top-k 0\nhello", ["--top-k", "positive"]),
        ("%%gemma --top-p 1.5\nhello", ["--top-p", "(0, 1]"]),
        ("%%gemma --seed x\nhello", ["--seed"]),
        ("%%gemma --format html\nhello", ["invalid choice: 'html'"]),
        ("%%gemma -o 1x\nhello", ["not a valid Python variable name"]),
        ("%%gemma --stop\nhello", ["--stop", "expected one argument"]),
        ("%%gemma --stop 'unclosed\nhello", ["check the quotes"]),
        ("%%gemma --score --chat\nhello", ["do not combine"]),
        ("%%gemma --layer 1\nhello", ["--layer and --head only make sense with --attention"]),
        ("%%gemma --target x\nhello", ["--target only makes sense with --attribute"]),
        ("%%gemma\n   \n\n", ["cell is empty"]),
        ("%%gemma\nhello {nobody} {nothing.x}", ["Unknown names", "nobody, nothing"]),
        ("%%gemma\n{__import__('os')}", ["Cannot interpolate", "--no-interpolate"]),
        ("%%gemma\n{a+b}", ["Cannot interpolate {a+b}"]),
        ("%%gemma\nan { unclosed brace", ["no matching '}'"]),
        ("%gemma", ["needs a command"]),
        ("%gemma generate hello", ["Unknown %gemma command 'generate'", "%%gemma"]),
        ("%gemma load --dtype float8", ["--dtype", "invalid choice"]),
        ("%gemma load --backend mxnet", ["--backend", "invalid choice"]),
        ("%gemma adapters save", ["needs a NAME"]),
        ("%gemma chat forget", ["invalid choice: 'forget'"]),
    ],
)
def test_errors_are_one_clear_line(shell, source, fragments):
    assert_one_line_error(run_magic(source), *fragments)


def test_prompt_longer_than_context_is_one_line(shell, tiny_lab):
    shell.user_ns["long_text"] = "hello " * tiny_lab.context_length
    assert_one_line_error(run_magic("%%gemma\n{long_text}"), "exceeds the model's context")


@pytest.mark.parametrize("source", ["%%gemma\nhello", "%gemma info", "%gemma chat reset"])
def test_no_model_loaded(shell, source):
    gemma_lab.magics.use(None)
    assert_one_line_error(run_magic(source), "No model loaded: run %gemma load first")


def test_switching_backend_after_keras_started_is_one_line(shell):
    other = "torch" if shell.run_cell("import keras; keras.config.backend()").result != "torch" \
        else "jax"
    assert_one_line_error(run_magic(f"%gemma load --backend {other}"), "Restart the kernel")


def test_keyboard_interrupt_keeps_the_partial_output(shell, tiny_lab, monkeypatch):
    real_step = tiny_lab.compiled.step
    calls = []

    def step(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(tiny_lab.compiled, "step", step)
    run = run_magic("%%gemma --max-new-tokens 10 -o g\nhello")
    assert_one_line_error(run, "Interrupted after 2 tokens", "stored in g")
    g = shell.user_ns["g"]
    assert g.finish_reason == "interrupted" and len(g.steps) == 2
    assert run.outputs[-1].update and "application/vnd.gemma-lab.v1+json" in run.outputs[-1].data
    monkeypatch.undo()
    again = run_magic("%%gemma --max-new-tokens 3 -o g2\nhello")
    assert again.error is None and len(shell.user_ns["g2"].steps) >= 1


# --- line commands ---------------------------------------------------------------------------
def test_info_prints_the_model(shell):
    run = run_magic("%gemma info")
    assert run.error is None
    assert "tiny-gemma3" in run.stdout + "".join(run.texts)


def test_load_a_preset_directory(shell, tiny_lab, tmp_path):
    tiny_lab.causal_lm.save_to_preset(str(tmp_path / "tiny_preset"))
    run = run_magic(f"%gemma load {tmp_path / 'tiny_preset'}")
    assert run.error is None, run.stderr
    lab = gemma_lab.magics.current()
    assert lab is not tiny_lab and lab.model_id == "tiny_preset"
    assert "Loaded tiny_preset on" in run.stdout
    assert run_magic("%%gemma --no-stream --max-new-tokens 2\nhello").error is None


def test_load_passes_distribution_and_mesh_to_load(shell, tiny_lab, tmp_path):
    # One device here: a 3x5 mesh reaches gemma_lab.load, which says what is available.
    tiny_lab.causal_lm.save_to_preset(str(tmp_path / "tiny_preset"))
    gemma_lab.magics.use(tiny_lab)
    run = run_magic(f"%gemma load {tmp_path / 'tiny_preset'} --distribution model_parallel "
                    "--mesh 3x5")
    assert_one_line_error(run, "spans 15 devices, but 1 are available")
    assert gemma_lab.magics.current() is tiny_lab  # the failed load replaced nothing


@pytest.mark.parametrize(("flags", "message"), [
    ("--mesh 2x4", "--mesh needs --distribution"),
    ("--distribution model_parallel --mesh 2y4", "mesh must be DATAxMODEL"),
    ("--distribution sideways", "invalid choice"),
])
def test_bad_mesh_flags_are_one_line_errors(shell, flags, message):
    assert_one_line_error(run_magic(f"%gemma load {flags}"), message)


def test_load_a_missing_path_is_one_line(shell):
    assert_one_line_error(run_magic("%gemma load /nonexistent/model.gguf"), "No GGUF file")


def test_chat_cells_keep_the_conversation_and_reset_clears_it(shell, tiny_lab):
    gemma_lab.magics.use(tiny_lab)
    tiny_lab.reset_chat()
    run = run_magic("%%gemma --chat --max-new-tokens 3 -o reply\nHello there")
    assert run.error is None, run.stderr
    reply = shell.user_ns["reply"]
    assert [t["role"] for t in tiny_lab.chat_history] == ["user", "model"]
    assert tiny_lab.chat_history[1]["content"] == reply.text
    assert any("application/vnd.gemma-lab.v1+json" in o.data for o in run.outputs)
    run = run_magic("%gemma chat reset")
    assert run.error is None and "Chat history cleared" in run.stdout
    assert tiny_lab.chat_history == []


def test_every_other_command_runs_on_the_real_session(shell, tmp_path, monkeypatch):
    """finetune, adapters save / list, playground, and a cell with --attention --lens
    --attribute, all on a real (tiny) session: what each shows comes from it."""
    from gemma_lab.inspect.records import Attribution, Trace
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab
    from gemma_lab.testing import tiny_causal_lm

    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path))
    lab = gemma_lab.magics.use(GemmaLab(LoadedModel(tiny_causal_lm(), "tiny-magics", "test",
                                                    None, "float32")))
    shell.user_ns["rows"] = ["hello world"] * 4
    run = run_magic("%gemma finetune rows --rank 2 --epochs 2 --lr 0.001 --batch-size 2")
    assert run.error is None, run.stderr
    assert lab.adapter_name.startswith("unsaved-") and lab.adapters.last_result.steps == 4
    assert lab.adapters.last_result.hyperparameters["learning_rate"] == 0.001
    assert run_magic("%gemma adapters save mine").error is None
    assert lab.adapter_name == "mine"
    assert "'name': 'mine'" in run_magic("%gemma adapters list").stdout
    assert run_magic("%gemma playground").error is None
    run = run_magic("%%gemma --no-stream --attention --lens --attribute --layer 1 --head 0 "
                    "--max-new-tokens 3 -o g\nhello")
    assert run.error is None, run.stderr
    generated = shell.user_ns["g"]
    assert isinstance(generated, Generation)
    shown = [o.data["application/vnd.gemma-lab.v1+json"] for o in run.outputs
             if "application/vnd.gemma-lab.v1+json" in o.data]
    kinds = [payload["kind"] for payload in shown]
    assert kinds == ["generation", "trace", "attribution"], kinds
    assert shown[1]["text"] == "hello" + generated.text
    trace = lab.trace("hello" + generated.text, layers=[1], heads=[0])
    attribution = lab.attribute("hello", target=generated.text)
    assert isinstance(trace, Trace) and isinstance(attribution, Attribution)
    assert shown[1]["text"] == trace.text and shown[2]["text"] == attribution.to_dict()["text"]


def test_attention_and_lens_show_one_view_of_what_was_asked(shell, tiny_lab, monkeypatch):
    traced = []
    real_trace = tiny_lab.trace

    def trace(text, layers=None, heads=None):
        traced.append((text, real_trace(text, layers=layers, heads=heads)))
        return traced[-1][1]

    monkeypatch.setattr(tiny_lab, "trace", trace)
    run = run_magic("%%gemma --no-stream --attention --lens --layer 1 --head 2 "
                    "--max-new-tokens 3 -o g\nhello")
    assert run.error is None, run.stderr
    ((text, t),) = traced
    assert list(t.layers) == [1] and list(t.heads) == [2]
    assert text == "hello" + shell.user_ns["g"].text  # prompt and continuation
    # The generation, then the trace: no plotly copies of the same attention / lens.
    assert not any("application/vnd.plotly.v1+json" in o.data for o in run.outputs)
    (shown,) = [o.data[GEMMA] for o in run.outputs if o.data.get(GEMMA, {}).get("kind")
                == "trace"]
    assert shown["attention"]["data"] == t.to_dict()["attention"]["data"]
    assert shown["lens"] == t.to_dict()["lens"]

    run = run_magic("%%gemma --no-stream --attention --max-new-tokens 2\nhello")
    assert run.error is None, run.stderr
    (shown,) = [o.data[GEMMA] for o in run.outputs if o.data.get(GEMMA, {}).get("kind")
                == "trace"]
    assert "attention" in shown and "lens" not in shown  # --attention alone: no lens table
    run = run_magic("%%gemma --no-stream --lens --max-new-tokens 2\nhello")
    (shown,) = [o.data[GEMMA] for o in run.outputs if o.data.get(GEMMA, {}).get("kind")
                == "trace"]
    assert "lens" in shown and "attention" not in shown


def test_attribute_shows_the_attribution_of_the_continuation(shell):
    run = run_magic("%%gemma --no-stream --attribute --max-new-tokens 3 -o g\nhello")
    assert run.error is None, run.stderr
    assert len(run.outputs) == 2  # the generation, then the attribution
    run = run_magic("%%gemma --score --attribute --target ' world'\nhello")
    assert run.error is None, run.stderr


def test_finetune_data_must_be_a_variable_or_a_file(shell, tiny_lab):
    gemma_lab.magics.use(tiny_lab)
    assert_one_line_error(run_magic("%gemma finetune nowhere.jsonl"),
                          "neither a variable in the notebook nor a file")


# --- interventions ---------------------------------------------------------------------------
def test_ablate_and_steer_flags_hold_for_the_cell(shell, tiny_lab):
    import numpy as np

    from gemma_lab import interventions as iv

    vector = tiny_lab.steering_vector("good", "bad", layer=1)
    shell.user_ns["calm"] = vector
    run = run_magic("%%gemma --score --ablate 0.1,1.2 --ablate 1.0 --steer calm@1:2.5 -o s\n"
                    "hello world")
    assert run.error is None, run.stderr
    hooks = iv.ablate_heads([(0, 1), (1, 2), (1, 0)]) | iv.add(vector, layer=1, scale=2.5)
    with tiny_lab.hooks(hooks):
        expected = tiny_lab.score("hello world").logprobs
    np.testing.assert_allclose(shell.user_ns["s"].logprobs, expected, atol=1e-6)
    assert not tiny_lab.runtime.active_hooks.fns  # nothing left on after the cell
    run = run_magic("%%gemma --max-new-tokens 3 --no-stream --steer calm@1:40 -o g\nhello")
    assert run.error is None, run.stderr
    with tiny_lab.hooks(iv.add(vector, layer=1, scale=40.0)):
        assert shell.user_ns["g"].token_ids == tiny_lab.generate("hello", 3).token_ids


@pytest.mark.parametrize("cell, fragments", [
    ("%%gemma --ablate 0.9\nhi", ["Head 9 of layer 0 is out of range"]),
    ("%%gemma --ablate 7\nhi", ["is not LAYER.HEAD"]),
    ("%%gemma --steer nothing@1\nhi", ["no variable 'nothing'"]),
    ("%%gemma --steer v@x\nhi", ["is not VAR@LAYER[:SCALE]"]),
    ("%%gemma patch --target ' ok'\nhello world", ["needs two lines"]),
    ("%%gemma patch\na\nb", ["--target"]),
    ("%%gemma patch --target ' ok'\nhello world\nhello there", ["10 tokens", "8"]),
])
def test_bad_intervention_flags_are_one_line_errors(shell, cell, fragments):
    assert_one_line_error(run_magic(cell), *fragments)


def test_patch_cell_shows_the_heatmap_and_stores_the_result(shell, tiny_lab):
    run = run_magic("%%gemma patch --target ' ok' --over heads -o r\nhello world\nhello wurld")
    assert run.error is None, run.stderr
    result = shell.user_ns["r"]
    expected = tiny_lab.patch("hello world", "hello wurld", target=" ok", over="heads",
                              progress=False)
    assert (result.scores == expected.scores).all()
    kinds = [o.data.get("application/vnd.gemma-lab.v1+json", {}).get("kind") for o in run.outputs]
    assert "patching" in kinds
    # One view of the patching scores: the result's own heatmap, no plotly copy.
    assert not any("application/vnd.plotly.v1+json" in o.data for o in run.outputs)


def test_hooks_lists_every_point_once_per_block(shell, tiny_lab):
    run = run_magic("%gemma hooks")
    assert run.error is None, run.stderr
    assert f"{len(tiny_lab.hook_points())} hook points (2 blocks)" in run.stdout
    for point in ("embed", "blocks.{0..1}.attn.z", "blocks.{0..1}.resid_post", "logits"):
        assert point in run.stdout


def test_hooks_names_the_layers_each_point_exists_in(shell):
    """Gemma 4's KV-shared layers have no attn.k / attn.v: the listing says which layers do."""
    from gemma_lab.testing import tiny_session

    lab = tiny_session("gemma4")
    gemma_lab.magics.use(lab)  # (the shell fixture puts the tiny Gemma 3 back)
    run = run_magic("%gemma hooks")
    assert run.error is None, run.stderr
    names = lab.hook_points()
    for point in ("attn.k", "attn.v", "moe.router", "ple_out"):
        held = sorted(int(n.split(".")[1]) for n in names if n.endswith("." + point))
        assert f"blocks.{{{_span(held)}}}.{point} " in run.stdout
    assert "expert router" in run.stdout


def _span(layers):
    return layers[0] if len(layers) == 1 else f"{layers[0]}..{layers[-1]}"


def test_evaluate_shows_the_table_and_figure_and_stores_the_result(shell, tiny_lab, tmp_path):
    import json

    shell.user_ns["rows"] = ["hello world", {"prompt": "a", "response": " b c"}]
    run = run_magic("%gemma evaluate rows --metric perplexity,accuracy -o ev")
    assert run.error is None, run.stderr
    ev = shell.user_ns["ev"]
    want = tiny_lab.evaluate(shell.user_ns["rows"], metrics=["perplexity", "accuracy"],
                             progress=False)
    assert ev.metrics == ("perplexity", "accuracy")
    assert ev.table["perplexity"].tolist() == want.table["perplexity"].tolist()
    kinds = [sorted(o.data) for o in run.outputs]
    assert any("text/html" in k for k in kinds)
    assert any("application/vnd.plotly.v1+json" in k for k in kinds), kinds
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ("one two", "three")))
    assert run_magic(f"%gemma evaluate {path} -o ev2").error is None
    assert len(shell.user_ns["ev2"].table) == 2
    assert_one_line_error(run_magic("%gemma evaluate rows --metric nope"), "unknown metric")
    assert_one_line_error(run_magic("%gemma evaluate missing_name"), "neither a variable")
    assert_one_line_error(run_magic("%gemma evaluate rows -o print"), "print")


@pytest.mark.parametrize("cell, hint", [
    ("%%gemma --atention\nhello", "Did you mean --attention (not --atention)?"),
    ("%%gemma --max-new-token 3\nhello", "Did you mean --max-new-tokens (not --max-new-token)?"),
    ("%gemma finetune rows --rnk 3", "Did you mean --rank (not --rnk)?"),
])
def test_a_mistyped_flag_names_the_flag_it_is_close_to(shell, cell, hint):
    assert_one_line_error(run_magic(cell), hint)


def test_a_flag_close_to_nothing_gets_no_guess(shell):
    run = run_magic("%%gemma --zzz\nhello")
    assert_one_line_error(run, "unrecognized arguments: --zzz")
    assert "Did you mean" not in str(run.error)
