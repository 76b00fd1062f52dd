"""The studies: staged, resumable experiments that write reports/, one package per study.

Decision (issue 28): the studies are not installed with `routerank`; they live beside `bench/` in a checkout of the
repository, where `configs`, `reports/` and the tests that check them are. So the installed `routerank` command never
imports them (nothing in `src/routerank` imports `studies`), and each study runs from the repository root as

    python -m studies.<name> --config studies/<name>/configs/<profile>.toml

(`r2r`, `r3ag`, `llm_training`, `effectiveness`, `rerank_table`; `python -m studies.r2r.router_eval` for R2R's
routing accuracy). A study's configs sit next to it in `studies/<name>/configs/`; `configs/` keeps only the
library's own (serving, the R3AG pool, the trainers').

Shared pieces: `studies.cli` (the common options, and a `RouterankError` as one line `routerank: error: ...` with
exit code 2), `studies.base` (the `Study` base: datasets, seeded test samples, work dirs and config digests) and
`studies.report_format` (the number formats every report uses).
"""
