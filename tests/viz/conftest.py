"""Fixtures shared by the viz tests: the headless Chromium driver of the browser tests."""

from tests.browser.test_browser_rendering import driver  # noqa: F401  (a pytest fixture)
