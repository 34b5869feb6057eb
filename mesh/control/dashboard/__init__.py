"""The live service graph (Weir's Kiali): a web page served by the control plane on its own loopback port.

Flow: `scrape` samples every connected proxy's Istio metrics → `metrics` parses and subtracts two
scrapes → `graph` builds nodes (workloads, grouped by app) and edges (rate, share, errors, latency,
mTLS) → `badges` marks the nodes with the config acting on them → `panel` details one node → `app`
serves the page (`static/`: index.html, app.js, app.css, the vendored Cytoscape) and the JSON API.
"""
