"""The forward pass: sequence log-probs of packed, prefix-shared batches (or padded ones), block
attention, chunked log-probs from hidden states, the tied-embedding gradient, recomputation,
precision and the CPU product routing."""
