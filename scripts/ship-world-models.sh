#!/usr/bin/env bash
# Train the default world's models (seed 0) in an empty cache and lay them out as the package ships them
# (src/t3unlearn/world/models/<root>/<name>): run after a change to the world generator or the training recipe.
# About 1,000 CPU seconds. The shipped copies are what every machine's demo and world figures then use.
set -euo pipefail
cd "$(dirname "$0")/.."
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
T3UNLEARN_HOME="$home" T3UNLEARN_TRAIN_MODELS=1 t3unlearn world train --world default --models pretrained,full,retain90,retain95,retain99
rm -rf src/t3unlearn/world/models
mkdir -p src/t3unlearn/world/models
for root in "$home"/models/default-*/; do
  [ -d "$root" ] || continue
  dest="src/t3unlearn/world/models/$(basename "$root")"
  mkdir -p "$dest"
  for entry in "$root"*; do
    case "$(basename "$entry")" in pretrained|full|retain90|retain95|retain99|tokenizer|settings.json) cp -r "$entry" "$dest/" ;; esac
  done
done
chmod -R a+rX src/t3unlearn/world/models
du -sh src/t3unlearn/world/models
echo "shipped: $(ls src/t3unlearn/world/models)"
