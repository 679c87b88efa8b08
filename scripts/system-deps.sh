#!/usr/bin/env bash
# Debian packages the test suite uses: headless Chromium (report + web app browser tests),
# PostgreSQL (multi-worker search test). Tests skip with a reason when these are absent.
set -uo pipefail
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  pkgs=""
  command -v chromium >/dev/null 2>&1 || pkgs="$pkgs chromium"
  [ -d /usr/lib/postgresql ] || pkgs="$pkgs postgresql"
  [ -d /usr/share/datasets/fashion-mnist ] || pkgs="$pkgs dataset-fashion-mnist"
  if [ -n "$pkgs" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs) >/tmp/mnist-cnn-apt.log 2>&1 \
      || echo "warning: apt-get install of$pkgs failed (see /tmp/mnist-cnn-apt.log); dependent tests will skip" >&2
  fi
fi
