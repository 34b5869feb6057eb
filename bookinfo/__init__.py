"""bookinfo-lite: the demo application Weir routes (ui, gw, books v1/v2, ratings v1/v2).

Flow: `__main__` reads `config.Settings`, builds one app module (`ui`, `gw`, `books`, `ratings`) on top of
`server.base_app`, which owns health, access log, chaos and error mapping; `calls` makes the one outbound
call each app does.
"""

APPS = ("ui", "gw", "books", "ratings")
VERSIONS = ("v1", "v2")
