"""``tgrag eval retrieval|generate|answers``, added to the CLI by ``register(app)``
(``api/cli/__init__.py``).  The work is in ``eval/``; these are the options, the progress lines
on stderr and the printed tables.

Without an LLM (``TGRAG_LLM=none``) ``generate`` is an input error (exit 2: there is nothing it can
produce), while ``answers`` runs offline: extractive answers graded by gold-answer containment
(also with ``--offline`` when an LLM is configured).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import typer

from rag.errors import InputError
from rag.settings import Settings

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
    collapse: bool | None = typer.Option(
        None, "--collapse/--no-collapse",
        help="Collapse near-duplicate posts as search does [default: TGRAG_COLLAPSE_DUPLICATES]."),
) -> None:
    """Index a BEIR dataset through the real pipeline (cached) and score each search mode, as
    `tgrag search` ranks (same searcher)."""
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

    result = evaluate_retrieval(dataset, settings, mode_list, limit, config, progress,
                                collapse_duplicates=collapse)
    click.echo(result.to_markdown())
    if json_path:
        _write_json(json_path, result.to_json())
    png = chart or (json_path.with_suffix(".png") if json_path else
                    Path(f"eval-{result.dataset}.png"))
    bar_chart(result, png)
    click.echo(f"chart: {png}", err=True)


@eval_app.command("generate")
def generate(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Folder to write the BEIR dataset to."),
    channel: list[str] = typer.Option(
        [], "--channel", "-c", help="Channel id, username or exact title (repeatable; "
        "default: every indexed channel)."),
    n: int = typer.Option(100, "-n", "--n", min=1, help="Questions to generate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the post sample."),
    min_chars: int | None = typer.Option(None, "--min-chars", min=1,
                                         help="Skip posts shorter than this (default 100)."),
    max_corpus: int | None = typer.Option(
        None, "--max-corpus", min=1, help="Cap the corpus: the question posts plus a sample of "
        "the others (default: every post of the channels)."),
    force: bool = typer.Option(False, "--force", help="Overwrite a dataset already in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Make question → post pairs from your indexed channels with the LLM (BEIR format)."""
    from api.cli.context import open_services, print_json
    from eval.generate import MIN_POST_CHARS, GenerateReport, check_out_dir, generate_dataset
    from eval.llm_util import require_llm
    from rag.llm import build_llm

    settings: Settings = ctx.obj
    require_llm(settings, "eval generate")
    llm = build_llm(settings)  # a credentials problem shows before the data folder is taken
    check_out_dir(out, force)
    shown = [0]

    def progress(report: GenerateReport) -> None:
        if report.tried - shown[0] >= 10 or report.questions >= n:
            shown[0] = report.tried
            click.echo(f"generate: {report.questions}/{n} questions ({report.tried} posts tried, "
                       f"{report.rejected} rejected, {report.failed} failed)", err=True)

    with open_services(ctx, "eval generate", llm=llm) as services:
        report = generate_dataset(
            services.index, llm, out, channels=channel, n=n, seed=seed,
            min_chars=min_chars or MIN_POST_CHARS, max_corpus=max_corpus, force=force,
            on_progress=progress,
        )
    if as_json:
        print_json(report.to_dict())
        return
    click.echo(report.summary())
    click.echo(f"next: tgrag eval retrieval --dataset {out}", err=True)


@eval_app.command("answers")
def answers(
    ctx: typer.Context,
    dataset: Path = typer.Option(..., "--dataset", help="BEIR folder (e.g. from eval generate)."),
    limit: int | None = typer.Option(None, "--limit", min=1,
                                     help="Use only the first N queries."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results as JSON."),
    offline: bool = typer.Option(False, "--offline", help="Grade the extractive answers by "
                                 "gold-answer containment even when an LLM is configured."),
) -> None:
    """Answer each query with the real QA and grade it: LLM judge, or offline without an LLM."""
    from eval.answers import evaluate_answers
    from eval.beir import load_beir
    from rag.llm import build_llm

    settings: Settings = ctx.obj
    load_beir(dataset)  # a bad dataset is an error before anything is built
    llm = None if offline or settings.llm == "none" else build_llm(settings)
    if llm is None:
        click.echo("offline: extractive answers graded by gold-answer containment (no LLM)",
                   err=True)

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done % (200 if stage == "index" else 10) == 0:
            click.echo(f"{stage}: {done}/{total}", err=True)

    result = evaluate_answers(dataset, settings, llm, limit, progress)
    click.echo(result.to_markdown())
    if json_path:
        _write_json(json_path, result.to_json())


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
