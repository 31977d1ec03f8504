"""Background work that outlives requests: the job and batch runners, and the worker that hosts them."""
