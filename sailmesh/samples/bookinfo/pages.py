"""productpage's HTML: the index with the service tree and the product page (the original's Jinja templates)."""

from __future__ import annotations

from html import escape
from typing import Any

HEAD = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta http-equiv="X-UA-Compatible" content="IE=edge">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Simple Bookstore App</title>
<link rel="stylesheet" href="static/bookinfo.css">
</head>
<body>
"""
TAIL = "</body>\n</html>\n"


def _e(value: Any) -> str:
    return escape(str(value))


def service_table(node: Any) -> str:
    """A JSON value as nested HTML tables (what json2html renders for the original's index)."""
    if isinstance(node, dict):
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{service_table(v)}</td></tr>" for k, v in node.items())
        return f'<table class="table table-condensed table-bordered table-hover">{rows}</table>'
    if isinstance(node, list):
        return "<ul>" + "".join(f"<li>{service_table(v)}</li>" for v in node) + "</ul>"
    return _e(node)


def index_page(services: dict[str, Any]) -> str:
    """GET / : what the app is and links that generate a request as a normal user or a tester."""
    return (
        HEAD + '<div class="container">\n<h3>Hello! This is a simple bookstore application consisting of three services'
        " as shown below</h3>\n"
        + service_table(services)
        + "\n<h4>Click on one of the links below to auto generate a request to the backend as a real user or a"
        " tester</h4>\n"
        '<p><a href="/productpage?u=normal">Normal user</a></p>\n'
        '<p><a href="/productpage?u=test">Test user</a></p>\n</div>\n' + TAIL
    )


def _navbar(user: str) -> str:
    if user:
        account = (
            '<p class="navbar-text navbar-right"><i class="glyphicon glyphicon-user" aria-hidden="true"></i>'
            f'<span style="padding-left: 5px;">{_e(user)} ( <a href="logout">sign out</a> )</span></p>'
        )
    else:
        account = (
            '<form method="post" action="login" name="login_form" class="navbar-form navbar-right">'
            '<input type="text" class="form-control" name="username" id="username" placeholder="User Name"> '
            '<input type="password" class="form-control" name="passwd" placeholder="Password"> '
            '<button type="submit" class="btn btn-primary">Sign in</button></form>'
        )
    return (
        '<nav class="navbar navbar-inverse navbar-static-top"><div class="container">'
        '<div class="navbar-header"><a class="navbar-brand" href="#">BookInfo Sample</a></div>'
        f"{account}</div></nav>\n"
    )


def _details_column(status: int, details: dict[str, Any]) -> str:
    if status == 200:
        rows = "".join(
            f"<dt>{label}:</dt>{_e(details.get(key, ''))}\n"
            for label, key in (
                ("Type", "type"),
                ("Pages", "pages"),
                ("Publisher", "publisher"),
                ("Language", "language"),
                ("ISBN-10", "ISBN-10"),
                ("ISBN-13", "ISBN-13"),
            )
        )
        return f'<h4 class="text-center text-primary">Book Details</h4>\n<dl>\n{rows}</dl>\n'
    error = f"<p>{_e(details.get('error', ''))}</p>\n" if details else ""
    return f'<h4 class="text-center text-primary">Error fetching product details!</h4>\n{error}'


def _stars(rating: Any) -> str:
    if not isinstance(rating, dict):
        return ""
    stars = rating.get("stars")
    if isinstance(stars, int) and stars:
        full = '<span class="glyphicon glyphicon-star"></span>\n' * max(0, min(stars, 5))
        empty = '<span class="glyphicon glyphicon-star-empty"></span>\n' * max(0, 5 - stars)
        color = _e(rating.get("color", ""))
        return f'<font color="{color}">\n<!-- full stars: -->\n{full}<!-- empty stars: -->\n{empty}</font>\n'
    if rating.get("error"):
        return f"<p><i>{_e(rating['error'])}</i></p>\n"
    return ""


def _reviews_column(status: int, reviews: dict[str, Any]) -> str:
    if status != 200:
        error = f"<p>{_e(reviews.get('error', ''))}</p>\n" if reviews else ""
        return f'<h4 class="text-center text-primary">Error fetching product reviews!</h4>\n{error}'
    parts = ['<h4 class="text-center text-primary">Book Reviews</h4>\n']
    for review in reviews.get("reviews") or []:
        if not isinstance(review, dict):
            continue
        parts.append(
            f"<blockquote>\n<p>{_e(review.get('text', ''))}</p>\n<small>{_e(review.get('reviewer', ''))}</small>\n"
            f"{_stars(review.get('rating'))}</blockquote>\n"
        )
    cluster = reviews.get("clustername")
    on_cluster = f" on cluster <u>{_e(cluster)}</u>" if cluster not in (None, "null") else ""
    parts.append(f"<dl>\n<dt>Reviews served by:</dt>\n<u>{_e(reviews.get('podname', ''))}</u>{on_cluster}\n</dl>\n")
    return "".join(parts)


def product_page(
    product: dict[str, Any],
    details_status: int,
    details: dict[str, Any],
    reviews_status: int,
    reviews: dict[str, Any],
    user: str,
) -> str:
    """GET /productpage: the book, its details and its reviews (stars as the reviews version returns them)."""
    return (
        HEAD
        + _navbar(user)
        + '<div class="container-fluid">\n<div class="row"><div class="col-md-12">\n'
        + f'<h3 class="text-center text-primary">{_e(product["title"])}</h3>\n'
        + f"<p>Summary: {product['descriptionHtml']}</p>\n</div></div>\n"
        + '<div class="row">\n<div class="col-md-6">\n'
        + _details_column(details_status, details)
        + '</div>\n<div class="col-md-6">\n'
        + _reviews_column(reviews_status, reviews)
        + "</div>\n</div>\n</div>\n"
        + TAIL
    )
