"""deploylm report: every artifact of a run measured side by side (task metric, batch-1 latency, batch-32
throughput on the dev set's real lengths, size, peak RSS), labelled by lineage, with the Pareto front of
metric vs throughput: the table and plot a user chooses what to ship from."""
