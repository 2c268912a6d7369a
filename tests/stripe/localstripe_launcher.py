"""Starts localstripe (a fake Stripe) on 127.0.0.1:PORT without persisting to disk.

localstripe binds every interface and rewrites <tmpdir>/localstripe.pickle when started with
its own command; the tests need neither, so this launcher runs its aiohttp app directly.
"""
import sys

import aiohttp.web
import localstripe.resources
import localstripe.server

localstripe.resources.store.dump_to_disk = lambda *args, **kwargs: None
aiohttp.web.run_app(localstripe.server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
