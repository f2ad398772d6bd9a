"""The Kubernetes Gateway API in Istio's terms: conversion (convert.py), precedence and hostnames, status, and the
config reader that adds the converted Gateways and VirtualServices to what snapshots are built from (reader.py)."""
