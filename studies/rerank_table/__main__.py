"""`python -m studies.rerank_table --dataset scifact --rerankers pointwise qlm ...`: the reranker effectiveness
table (rows merge into reports/rerank-table.json)."""

from studies.rerank_table.table import main

if __name__ == "__main__":
    main()
