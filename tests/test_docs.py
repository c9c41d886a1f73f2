"""The pages tell the truth about the code and the reports: every command shown in README.md and
docs/*.md works as written, every table they quote from a benchmark report is that report rendered
now, and no page reads as a diary.

Every `.venv/bin/python scripts/...` line of a shell block is collected. Each one's flags go through
its script's own `main` in this process, up to the point where the script would start the real
work (training, a benchmark, a measurement), which is replaced by a stop. The quick scripts and a
one-epoch dry run of training also run for real, in a scratch directory (so the documented relative
paths `logs/...` land there), where `logs/<run>` and `my_digit.png` stand for a run and an image
the test makes. Lines that need a killed run or a cluster are skipped, naming the test that covers
them instead. `python3 run.py ...` lines must name a command run.py has.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_reliability import script_main

import run

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = {  # a fragment of the command -> the test that covers that case instead
    "--resume": "test_reliability.py (a killed run, resumed)",
    "multi_worker": "test_distribute.py (two workers on loopback)",
}
# Where each script hands over to the real work; a stop there means its flags were all accepted.
WORK = [
    ("mlp_core.training.loop", "train_and_evaluate"),
    ("mlp_core.analysis.explore", "explore"),
    ("mlp_core.benchmark.throughput", "run_all"),
    ("mlp_core.benchmark.summary_cost", "measure"),
    ("mlp_core.benchmark.augment_cost", "augmentation_cost"),
    ("mlp_core.analysis.imbalance", "ablate_imbalance"),
    ("mlp_core.analysis.ablation", "ablate_normalization"),
    ("mlp_core.analysis.mistakes", "analyze_run"),
    ("mlp_core.serving.export", "export_model"),
    ("mlp_core.serving.export", "load_serving"),
    ("mlp_core.benchmark.markdown", "load_report"),  # render_docs.py, benchmark.py --from-json
    ("mlp_core.sweep.study", "open_storage"),
]
# Scripts that also run for real, cheaply: the documented flags plus these (the last value wins).
REAL = {
    "analyze.py": [],
    "export.py": [],
    "predict.py": [],
    "explore.py": [],
}


class Stop(Exception):
    """Raised where a script would start its real work."""


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv after `python`) for every script command in a shell block of the docs."""
    found: dict[str, tuple[str, list[str]]] = {}
    for page, line in _shell_lines():
        argv = _script_argv(line)
        if argv:
            found.setdefault(shlex.join(argv), (page, argv))
    return sorted(found.values(), key=lambda item: shlex.join(item[1]))


def _shell_lines() -> list[tuple[str, str]]:
    """(page, line) for every line of every shell block of the docs, continued lines joined."""
    lines = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|console|sh)\n(.*?)```", page.read_text(), re.S):
            lines += [(page.name, line) for line in block.replace("\\\n", " ").splitlines()]
    return lines


def _script_argv(line: str) -> list[str] | None:
    """The words after `.venv/bin/python` on a documented line, without comment, `$ ` or `&`."""
    if ".venv/bin/python scripts/" not in line:
        return None
    words = shlex.split(line.lstrip("$ "), comments=True)
    argv = words[words.index(".venv/bin/python") + 1 :]
    return [word for word in argv if word != "&"]


def _filled(argv: list[str], workdir: Path) -> list[str]:
    """The documented argv with its placeholders filled in and its globs expanded."""
    words: list[str] = []
    for word in argv:
        word = word.replace("logs/<run>", "logs/docs-run").replace("logs/default", "logs/docs-run")
        word = "docs/examples/seven.png" if word == "my_digit.png" else word
        words.extend(sorted(glob.glob(word, root_dir=workdir)) if "*" in word else [word])
    return words


COMMANDS = documented_commands()
IDS = [f"{page}:{shlex.join(argv)}" for page, argv in COMMANDS]


def test_the_docs_show_every_script():
    shown = {Path(argv[0]).name for _, argv in COMMANDS}
    assert shown == {path.name for path in (ROOT / "scripts").glob("*.py")}


@pytest.mark.parametrize("page, argv", COMMANDS, ids=IDS)
def test_documented_flags_are_accepted(page, argv, monkeypatch, workdir):
    _skip_if_uncoverable(argv)
    for module, name in WORK:
        monkeypatch.setattr(importlib.import_module(module), name, _stop)
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "argv", [str(ROOT / argv[0])])
    words = _filled(argv, workdir)
    with pytest.raises(Stop):
        script_main(Path(words[0]).name)(words[1:])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch directory with one finished one-epoch run, `logs/docs-run`, for `logs/<run>`."""
    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "docs" / "examples", work / "docs" / "examples")  # never the real docs/
    result = _run(work, ["scripts/train.py", "--dry-run", "--run-name", "docs-run"])
    assert result.returncode == 0, result.stderr
    return work


# Once per distinct command after its placeholders are filled in (`logs/<run>` = `logs/default`).
REAL_COMMANDS = list(
    {
        shlex.join(_filled(argv, ROOT)): (page, argv)
        for page, argv in COMMANDS
        if Path(argv[0]).name in REAL
    }.values()
)


@pytest.mark.parametrize(
    "page, argv", REAL_COMMANDS, ids=[f"{p}:{shlex.join(a)}" for p, a in REAL_COMMANDS]
)
def test_documented_command_runs(workdir, page, argv):
    words = _filled(argv, workdir) + REAL[Path(argv[0]).name]
    result = _run(workdir, words)
    assert result.returncode == 0, f"{page}: {shlex.join(argv)}\n{result.stderr[-2000:]}"


def _stop(*args, **kwargs):
    raise Stop


def _skip_if_uncoverable(argv: list[str]) -> None:
    for fragment, covered_by in SKIP.items():
        if fragment in argv:
            pytest.skip(f"needs more than this test can give; covered by {covered_by}")


def _run(workdir: Path, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / argv[0]), *argv[1:]],
        cwd=workdir,
        text=True,
        capture_output=True,
        timeout=600,
    )


def _render_docs():
    """scripts/render_docs.py as a module (its functions, not its command line)."""
    spec = importlib.util.spec_from_file_location(
        "render_docs", ROOT / "scripts" / "render_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BLOCKS = [
    (page.name, report, renderer, body)
    for page in PAGES
    for report, renderer, body in _render_docs().blocks(page.read_text())
]


def test_the_pages_quote_the_benchmark_report():
    quoting = {page for page, report, _, _ in BLOCKS if report == "docs/benchmark.json"}
    assert {"README.md", "throughput.md"} <= quoting


@pytest.mark.parametrize(
    "page, report, renderer, body", BLOCKS, ids=[f"{b[0]}:{b[1]}:{b[2]}" for b in BLOCKS]
)
def test_a_quoted_table_is_its_report_rendered_now(page, report, renderer, body):
    """Re-rendered from the JSON with today's renderer: a stale or hand-edited table fails here
    (`scripts/render_docs.py` refreshes them)."""
    rendered = _render_docs().rendered(report, renderer)
    assert rendered.count("\n") >= 2, f"{report}: {renderer} rendered no table"
    assert body == rendered, f"{page}: the table from {report} is stale; run scripts/render_docs.py"


RUN_PY = sorted(
    {
        (page, line.split("#")[0].strip())
        for page, line in _shell_lines()
        if line.lstrip("$ ").startswith("python3 run.py")
    }
)


@pytest.mark.parametrize("page, line", RUN_PY, ids=[f"{p}:{c}" for p, c in RUN_PY])
def test_a_documented_run_py_command_exists(page, line):
    words = shlex.split(line.lstrip("$ "))[2:]
    assert words and words[0] in run.COMMANDS, f"{page}: run.py has no command {words[:1]}"
    paths = [word for word in words[1:] if word.startswith("tests/")]
    assert all((ROOT / path).exists() for path in paths), f"{page}: no such file in {paths}"


# The marks of a lab notebook: sessions, runs by letter, the project's issues, what changed.
DIARY = re.compile(
    r"\bsessions?\b|\bruns? [A-N]\b|\b(?:this|the|that|our|an?) (?:\w+ )?issues?\b|"
    r"no longer|used to|was tried|we tried|previous(?:ly)?|superseded|not re-measured",
    re.I,
)


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_a_page_is_reference_not_a_diary(page):
    text = re.sub(r"\]\([^)]*\)|https?://\S+", "]", page.read_text())  # link targets are no prose
    found = [m.group(0) for m in DIARY.finditer(text)]
    assert not found, f"{page.name}: {found} (history lives in git log)"
