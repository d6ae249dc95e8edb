"""``anonymize app``: the local review page (detect, review, spare, add, render) in a browser.

:mod:`anonymize.app.server` is a thin FastAPI front over :class:`anonymize.api.Anonymizer`'s
``detect`` and ``render`` and the plan (docs/plan-schema.md); :mod:`anonymize.app.cli` starts it
on 127.0.0.1 with a random token; ``static/`` is the page (plain HTML, CSS and JS, no CDN).
"""
