"""The internal app's frame: header with navigation, language switch and logout, around the page container."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import dash
from dash import Input, Output, dcc, html

from layers.i18n import normalise_language, t


def language_from_search(search: str | None) -> str:
    """The language a URL's query string asks for (``?lang=en``), else the default."""
    values = [value for key, value in parse_qsl((search or "").lstrip("?")) if key == "lang"]
    return normalise_language(values[0] if values else None)


def switched_language_search(search: str | None) -> str:
    """The same query string in the other language: the filters and the drill-down position stay.

    A planner who switches language in the middle of a drill-down expects the same view in the other
    language, not the page's default view; only ``lang`` changes, every other parameter is kept in order.
    """
    other = "zh-CN" if language_from_search(search) == "en" else "en"
    kept = [(key, value) for key, value in parse_qsl((search or "").lstrip("?"), keep_blank_values=True)
            if key != "lang"]
    return "?" + urlencode([*kept, ("lang", other)])


def _nav_links(lang: str) -> list[html.A]:
    suffix = "?lang=en" if lang == "en" else ""
    return [
        html.A(
            t(page.get("name_key", page["name"]), lang),
            href=page["relative_path"] + suffix,
            className="cg-nav-link",
            id=f"shell-nav-{page['module'].rsplit('.', 1)[-1]}",
        )
        for page in dash.page_registry.values()
        if not page.get("hide_in_nav")
    ]


def layout() -> html.Div:
    """The frame; the header's words follow the URL's language (see ``register_callbacks``).

    A kiosk session (a wall display, dashboard/auth.py) gets the page container alone: no navigation, and
    none of the shell's callbacks, which a kiosk is not allowed to run.
    """
    from dashboard.auth import current_user

    user = current_user()
    if user is not None and user.is_kiosk:
        return html.Div([dash.page_container], className="cg-kiosk")
    return html.Div(
        [
            dcc.Location(id="shell-url", refresh="callback-nav"),
            html.Header(
                [
                    html.Span(t("app.title"), id="shell-title", className="cg-title"),
                    html.Nav(_nav_links("zh-CN"), id="shell-nav", className="cg-nav"),
                    html.A(t("nav.language"), id="shell-language", href="?lang=en", className="cg-nav-link"),
                    html.A(t("nav.logout"), id="shell-logout", href="/logout", className="cg-nav-link"),
                ],
                className="cg-header",
            ),
            html.Main(dash.page_container, className="cg-main"),
        ],
        className="cg-shell",
    )


def register_callbacks(app: dash.Dash) -> None:
    """Keep the header in the URL's language."""

    @app.callback(
        Output("shell-title", "children"),
        Output("shell-nav", "children"),
        Output("shell-language", "children"),
        Output("shell-language", "href"),
        Output("shell-logout", "children"),
        Input("shell-url", "search"),
    )
    def _translate_header(search: str | None) -> tuple[str, list[html.A], str, str, str]:
        lang = language_from_search(search)
        switch_href = switched_language_search(search)
        return (
            t("app.title", lang),
            _nav_links(lang),
            t("nav.language", lang),
            switch_href,
            t("nav.logout", lang),
        )
