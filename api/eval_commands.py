"""``tgrag eval retrieval``, added to the CLI by ``register(app)`` in ``api/cli.py``.

Only retrieval evaluation exists: ``eval generate`` and ``eval answers`` (issue 5) are not
implemented yet, so they are not offered at all rather than offered as stubs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import typer

from rag.errors import InputError

eval_app = typer.Typer(help="Evaluate search quality on BEIR-format datasets.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
def retrieval(
    ctx: typer.Context,
    dataset: Path = typer.Option(..., "--dataset", help="Folder with corpus.jsonl, queries.jsonl "
                                 "and qrels.tsv (BEIR format)."),
    modes: str = typer.Option("dense,sparse,hybrid", "--modes",
                              help="Comma-separated modes to compare."),
    limit: int | None = typer.Option(None, "--limit", min=1,
                                     help="Use only the first N queries."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results as JSON."),
    chart: Path | None = typer.Option(None, "--chart", help="PNG bar chart path "
                                      "(default: next to --json, else eval-<dataset>.png)."),
    fusion: str | None = typer.Option(None, "--fusion", help="Override TGRAG_FUSION "
                                      "(rrf, minmax, zscore)."),
    dense_weight: float | None = typer.Option(None, "--dense-weight", min=0.0),
    sparse_weight: float | None = typer.Option(None, "--sparse-weight", min=0.0),
    rrf_k: float | None = typer.Option(None, "--rrf-k", min=0.0),
    depth: int | None = typer.Option(None, "--depth", min=1, help="Hybrid candidates per list."),
) -> None:
    """Index a BEIR dataset through the real pipeline (cached) and score each search mode."""
    try:
        from eval.retrieval import bar_chart, evaluate_retrieval, parse_modes
        from rag.hybrid import FusionConfig
    except ImportError as exc:  # ranx / matplotlib are the `eval` extra
        raise InputError(f"evaluation needs the eval extra ({exc.name} is missing)",
                         hint="pip install 'tgrag[eval]'") from None

    settings = ctx.obj
    config = FusionConfig(
        method=fusion or settings.fusion,  # type: ignore[arg-type]
        dense_weight=settings.fusion_dense_weight if dense_weight is None else dense_weight,
        sparse_weight=settings.fusion_sparse_weight if sparse_weight is None else sparse_weight,
        rrf_k=settings.fusion_rrf_k if rrf_k is None else rrf_k,
        depth=depth or settings.fusion_depth,
    )
    mode_list = parse_modes(modes)

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done % 200 == 0:
            click.echo(f"{stage}: {done}/{total}", err=True)

    result = evaluate_retrieval(dataset, settings, mode_list, limit, config, progress)
    click.echo(result.to_markdown())
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_json(), ensure_ascii=False, indent=2),
                             encoding="utf-8")
    png = chart or (json_path.with_suffix(".png") if json_path else
                    Path(f"eval-{result.dataset}.png"))
    bar_chart(result, png)
    click.echo(f"chart: {png}", err=True)
