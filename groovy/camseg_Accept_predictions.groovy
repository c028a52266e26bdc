/*
 * camseg: Accept predictions (qupath-camseg)
 *
 * Makes camseg's tumour outlines your own annotations: the selected ones, or all of this image's
 * when nothing is selected. Accepted outlines lose the camseg name, so they train the next model
 * ("camseg Train on this project", or qcamseg train --init) and no later prediction replaces them.
 * Fix an outline first if it needs it (brush, eraser): an outline you reshaped or reclassified is
 * already yours, this only tidies its name. The camseg Review boxes are left alone.
 */

def camseg = evaluate(camsegLib()).newInstance(Dialogs, this)
String title = 'camseg: Accept predictions'

camseg.guard(title) {
    def result = camseg.acceptPredictions(getSelectedObjects())
    String message = 'Accepted ' + result.accepted + ' camseg outline(s) as your own annotations'
    println message
    if (!camseg.inBatch())
        Dialogs.showInfoNotification(title, message)
}

/** The shared helper camseg_lib.groovy: next to this script, else in the Shared or Project scripts folder. */
File camsegLib() {
    List<File> folders = []
    def self = binding.hasVariable('qupath.script.file') ? binding.getVariable('qupath.script.file') : null
    if (self != null)
        folders << new File(self.toString()).parentFile
    try {
        String shared = qupath.lib.gui.prefs.PathPrefs.scriptsPathProperty().get()
        if (shared)
            folders << new File(shared)
    } catch (Exception ignored) {
        // No Shared scripts folder set.
    }
    def project = getProject()
    if (project != null)
        folders << new File(Projects.getBaseDirectory(project), 'scripts')
    File lib = folders.collect { new File(it, 'camseg_lib.groovy') }.find { it.isFile() }
    if (lib == null)
        throw new FileNotFoundException('camseg_lib.groovy not found (looked in ' + folders.join(', ') +
                '). Install all camseg scripts together with: qcamseg install-scripts')
    return lib
}
