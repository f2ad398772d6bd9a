"""Istio's Bookinfo sample (productpage, details, reviews, ratings) as small aiohttp services."""
