"""Re-render the tables the docs quote from benchmark reports, between their marker comments.

python scripts/render_docs.py            # rewrite every stale block in README.md and docs/*.md
python scripts/render_docs.py --check    # write nothing; exit 1 naming each stale block

A block is `<!-- table: REPORT [RENDERER] -->` ... `<!-- end table -->`: REPORT is a report path
from the repository root, RENDERER a function of mlp_core.benchmark.markdown that takes the report
and returns Markdown (default: summary_table). So a page and its JSON cannot drift apart.
"""

import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlp_core.config.cli import ArgumentParser, run_main  # noqa: E402
from mlp_core.core.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(?P<open><!-- table: (?P<report>\S+)(?: (?P<renderer>\w+))? -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- end table -->)",
    re.S,
)


def pages(root: Path = ROOT) -> list[Path]:
    """The pages that may hold rendered blocks."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render_page(text: str, root: Path = ROOT) -> str:
    """`text` with every marked block replaced by what its renderer makes of its report now."""
    return BLOCK.sub(lambda m: _render_block(m, root), text)


def _render_block(match: re.Match, root: Path) -> str:
    body = rendered(match["report"], match["renderer"] or "summary_table", root)
    return f"{match['open']}{body}\n{match['close']}"


def rendered(report: str, renderer: str, root: Path = ROOT) -> str:
    """The Markdown `renderer` makes of the report at `report` (relative to `root`)."""
    from mlp_core.benchmark import markdown  # only once a page has a block

    render: Callable[[dict], str] | None = getattr(markdown, renderer, None)
    if not callable(render):
        raise UserError(f"mlp_core.benchmark.markdown has no renderer {renderer!r}")
    return render(markdown.load_report(root / report)).rstrip("\n")


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(report, renderer, body as written) for every marked block of a page."""
    return [
        (m["report"], m["renderer"] or "summary_table", m["body"].rstrip("\n"))
        for m in BLOCK.finditer(text)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        text = page.read_text()
        fresh = render_page(text)
        if fresh != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(fresh)
    verb = "stale" if args.check else "re-rendered"
    for page in stale:
        print(f"{verb}: {page}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
