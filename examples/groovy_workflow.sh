#!/usr/bin/env bash
# The Groovy-bridge workflow, from the terminal side. Everything after step 1 happens in QuPath's
# menus; this script only does the one-time set-up and prints what to click.
#
#   bash examples/groovy_workflow.sh [QUPATH_SCRIPTS_DIR]
set -euo pipefail
dir_args=()
[ $# -ge 1 ] && dir_args=(--dir "$1")

qcamseg doctor                            # is torch/CUDA there, and where is QuPath?
qcamseg install-scripts "${dir_args[@]}"  # copies groovy/*.groovy where QuPath's Automate menu finds them

cat <<'STEPS'

In QuPath (0.4, 0.5 or 0.6):
  1. Automate › User scripts… (0.5+) or Automate › Shared scripts… › Set script directory… (any version):
     choose the folder printed above.
  2. Run "camseg Configure Python" once; paste the Python printed above (an absolute path).
  3. Outline tumour with the class "Tumor" in a few images, then run "camseg Train on this project".
  4. Open an image and run "camseg Predict current image" (select annotations first to predict only inside
     them), or open "camseg Predict for project" and use Run › Run for project.
  5. Predicted elsewhere (qcamseg predict PROJECT on a GPU server)? Run "camseg Import predictions".
Only camseg's own objects are ever replaced; your annotations stay as they are.
STEPS
