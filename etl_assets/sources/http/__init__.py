"""``kind: http``: a JSON API read one window at a time (``spec.py`` says what a spec holds).

``source.py`` opens it; for each window it GETs the API's pages one at a time on one session
(``client.py``: retries, Retry-After, ``requests_per_second``), the window's bounds in the
query (``templates.py``), each page's records at a JSON path (``json_paths.py``), flattened
(``flatten.py``), the next page asked as ``pagination.py`` says.
"""
