"""`python -m studies.rag_qa`: the generator headroom table (see `studies.rag_qa.experiment`)."""

from studies.rag_qa.experiment import main

main()
