/*
 * camseg: Import predictions (qupath-camseg)
 *
 * Shows predictions computed elsewhere (e.g. `qcamseg predict PROJECT` on a GPU server) for the
 * image open now: reads <project>/camseg/predictions/<entryID>.geojson, removes the camseg objects
 * of an earlier run and adds the new ones. Your own annotations are never changed.
 * Works with Run > Run for project too.
 */

// Settings you may change -------------------------------------------------------------------
String PREDICTIONS_FILE = ''   // a .geojson file; '': <project>/camseg/predictions/<entryID>.geojson
// ---------------------------------------------------------------------------------------------

def camseg = evaluate(camsegLib()).newInstance(Dialogs, this)
String title = 'camseg: Import predictions'

camseg.guard(title) {
    File geojson
    if (PREDICTIONS_FILE.trim()) {
        geojson = new File(PREDICTIONS_FILE.trim())
    } else {
        def entry = getProjectEntry()
        if (entry == null)
            throw new FileNotFoundException('Open an image of a project, or set PREDICTIONS_FILE at the top of this script.')
        geojson = new File(camseg.camsegDir(getProject()), 'predictions/' + entry.getID() + '.geojson')
    }
    def result = camseg.importPredictions(geojson)
    String message = 'Added ' + result.added + ' camseg object(s), removed ' + result.removed + ' old one(s)'
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
