/*
 * camseg_lib.groovy: shared helper for the camseg_*.groovy scripts of qupath-camseg.
 *
 * This is not a command. The other camseg scripts load it with evaluate(...) from the folder
 * they sit in (`qcamseg install-scripts` puts all of them together). Keeping one copy of the
 * process, progress and import code here means a fix reaches every script at once.
 *
 * Works with QuPath 0.4, 0.5 and 0.6. Loaded scripts get no default imports, so everything is
 * imported explicitly; Dialogs moved package in 0.5, so the calling script passes its own
 * (default-imported) Dialogs class in.
 */

import qupath.lib.gui.prefs.PathPrefs
import qupath.lib.io.GsonTools
import qupath.lib.io.PathIO
import qupath.lib.objects.PathObjects
import qupath.lib.projects.Projects
import qupath.lib.scripting.QP

import java.nio.file.Files
import java.nio.file.StandardCopyOption
import java.text.SimpleDateFormat
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import java.util.zip.CRC32

/** A problem the user can fix; its message says how. */
class CamsegProblem extends RuntimeException {
    CamsegProblem(String message) { super(message) }
}

class Camseg {
    static final String PREF_PYTHON = 'camseg.python'
    static final String PREF_MODEL = 'camseg.model'
    static final String ENV_PYTHON = 'QCAMSEG_PYTHON'
    static final String CREATED_BY = 'qupath-camseg'
    /** The annotation that shows the tissue a prediction analysed (never trained on): placed locked. */
    static final String TISSUE_CLASS = 'camseg Tissue'
    static final String FINGERPRINT = 'camseg fingerprint'
    static final String REVIEW_NAME = 'camseg Review'
    static final String REVIEW_RANK = 'review rank'
    static final String NORMAL_CLASS = 'Normal'
    static final String PREF_REVIEWED = 'camseg.reviewed'
    static final int TAIL_LINES = 30

    final Class dialogs
    final Script script

    Camseg(Class dialogs, Script script) {
        this.dialogs = dialogs
        this.script = script
    }

    /** Print to the script editor's output pane. */
    void log(Object message) { script.println(message) }

    // ------------------------------------------------------------------ preferences, Python

    static Object preference(String name) {
        // (String) null picks the String overload (there are also boolean/int/double ones).
        return PathPrefs.createPersistentPreference(name, (String) null)
    }

    static String preferenceValue(String name) {
        String value = preference(name).get()
        return value?.trim() ?: null
    }

    static void setPreference(String name, String value) { preference(name).set(value) }

    /** The Python chosen in 'camseg Configure Python', else $QCAMSEG_PYTHON. */
    static File python() {
        String path = preferenceValue(PREF_PYTHON) ?: System.getenv(ENV_PYTHON)?.trim()
        if (!path)
            throw new CamsegProblem('No Python is set for camseg.\nRun "camseg Configure Python" first ' +
                    '(or set the environment variable ' + ENV_PYTHON + ' to the absolute path of the Python ' +
                    'that has qupath-camseg installed).')
        return checkPython(path)
    }

    static File checkPython(String path) {
        File file = new File(path.trim())
        if (!file.isAbsolute())
            throw new CamsegProblem('The Python path must be absolute (QuPath started from the desktop does ' +
                    'not see your shell\'s PATH): ' + path + '\nRun "camseg Configure Python" again.')
        if (!file.isFile())
            throw new CamsegProblem('Python not found at ' + file + '\nRun "camseg Configure Python" again.')
        return file
    }

    /** The full command for `python -m qupath_camseg ARGS` (UTF-8 mode, unbuffered output). */
    static List<String> command(List args) {
        return [python().absolutePath, '-X', 'utf8', '-u', '-m', 'qupath_camseg'] + args.collect { it.toString() }
    }

    // ------------------------------------------------------------------ running qcamseg

    /**
     * Run `python -m qupath_camseg ARGS`, streaming its output; return [exitCode: 0, tail: [...]].
     * stdout and stderr are read on their own threads; lines are handled here, on the script thread.
     * Lines of stdout that are JSON objects go to onEvent (a Map); everything else is printed.
     * "Kill running script" interrupts this thread: the process and its children are stopped.
     * A non-zero exit raises CamsegProblem with the process's last lines.
     */
    Map run(List args, String title, Closure onEvent = null) {
        List<String> cmd = command(args)
        log('Running: ' + cmd.collect { it.contains(' ') ? '"' + it + '"' : it }.join(' '))
        def builder = new ProcessBuilder(cmd)
        builder.environment().put('PYTHONIOENCODING', 'utf-8')
        // A conda env on Windows keeps DLLs in <env>\Library\bin, which `conda activate` puts on PATH.
        File envDir = new File(cmd[0]).parentFile
        def dllDirs = ['Library/bin', 'Library/usr/bin', 'Scripts'].collect { new File(envDir, it) }.findAll { it.isDirectory() }
        if (dllDirs && System.getProperty('os.name', '').toLowerCase().contains('win')) {
            String pathKey = builder.environment().keySet().find { it.equalsIgnoreCase('PATH') } ?: 'PATH'
            builder.environment().put(pathKey, (dllDirs*.absolutePath + [builder.environment().get(pathKey) ?: '']).join(File.pathSeparator))
        }
        Process process = builder.start()
        log('  (process ' + process.pid() + '; stop it with Run > Kill running script)')
        process.outputStream.close()
        def queue = new LinkedBlockingQueue<List>()
        [process.inputStream, process.errorStream].eachWithIndex { stream, i ->
            Thread.startDaemon("camseg-" + (i == 0 ? 'stdout' : 'stderr')) {
                try {
                    stream.withReader('UTF-8') { reader ->
                        String line
                        while ((line = reader.readLine()) != null)
                            queue.put([i, line])
                    }
                } catch (IOException ignored) {
                    // The process was stopped.
                } finally {
                    queue.put([i, null])
                }
            }
        }
        def tail = new ArrayDeque<String>()
        Closure remember = { String text ->
            tail.addLast(text)
            if (tail.size() > TAIL_LINES)
                tail.removeFirst()
        }
        List<String> errors = []
        long lastPrinted = 0
        int open = 2
        try {
            while (open > 0) {
                List item = queue.poll(200, TimeUnit.MILLISECONDS)
                if (Thread.currentThread().isInterrupted())
                    throw new InterruptedException()
                if (item == null)
                    continue
                String line = item[1]
                if (line == null) {
                    open--
                    continue
                }
                Map event = item[0] == 0 ? parseEvent(line) : null
                if (event != null) {
                    if (event.event == 'error') {
                        String message = (event.image ? event.image.toString() + ': ' : '') + event.message
                        errors << message
                        remember('error: ' + message)
                    } else if (event.event == 'note' || event.event == 'warning') {
                        remember(String.valueOf(event.message))
                    }
                    if (onEvent != null)
                        onEvent(event)
                } else if (line.trim()) {
                    remember(line)
                    // Progress bars redraw many times a second: print at most one per second.
                    long now = System.currentTimeMillis()
                    if (!line.contains('%|') || now - lastPrinted > 1000) {
                        log('  ' + line)
                        lastPrinted = now
                    }
                }
            }
            int exitCode = process.waitFor()
            if (exitCode != 0) {
                String message = title + ' failed (exit code ' + exitCode + ').'
                if (errors)
                    message += '\n' + errors.unique().join('\n')
                message += '\n\nLast lines from qcamseg:\n' + tail.join('\n')
                throw new CamsegProblem(message)
            }
            return [exitCode: exitCode, tail: new ArrayList<String>(tail)]
        } catch (InterruptedException e) {
            log('Stopping ' + title + ' (script killed)')
            throw new InterruptedException(title + ' was cancelled (Run > Kill running script).')
        } finally {
            if (process.isAlive())
                stop(process)
        }
    }

    static void stop(Process process) {
        def children = process.descendants().toArray()
        children.each { it.destroy() }
        process.destroy()
        if (!process.waitFor(5, TimeUnit.SECONDS)) {
            children.each { it.destroyForcibly() }
            process.destroyForcibly()
            process.waitFor(5, TimeUnit.SECONDS)
        }
    }

    static Map parseEvent(String line) {
        String text = line.trim()
        if (!text.startsWith('{') || !text.endsWith('}'))
            return null
        try {
            def value = GsonTools.getInstance().fromJson(text, Map)
            return value instanceof Map ? value : null
        } catch (Exception ignored) {
            return null
        }
    }

    /** An onEvent closure that prints start/progress (every 10 % or 5 s)/done lines. */
    Closure progressPrinter(String what) {
        long lastTime = 0
        int lastDecile = -1
        return { Map event ->
            if (event.event == 'start') {
                log(what + ' ' + event.image + ': ' + asInt(event.tiles) + ' tiles')
            } else if (event.event == 'progress') {
                int done = asInt(event.done), total = Math.max(asInt(event.total), 1)
                int decile = (int) (10 * done / total)
                long now = System.currentTimeMillis()
                if (decile != lastDecile || now - lastTime > 5000) {
                    double rate = event.tiles_per_s instanceof Number ? event.tiles_per_s as double : 0d
                    String eta = rate > 0 ? ', about ' + Math.round((total - done) / rate) + ' s left' : ''
                    log(String.format('  %3d%%  %d/%d tiles, %.1f tiles/s%s', (int) (100 * done / total), done, total, rate, eta))
                    lastDecile = decile
                    lastTime = now
                }
            } else if (event.event == 'done') {
                log(what + ' ' + event.image + ': done')
            } else if (event.event == 'skip') {
                log(what + ' ' + event.image + ': ' + (event.reason ?: 'skipped') + '; using the saved result')
            } else if (event.event == 'note') {
                log('Note: ' + event.message)
            } else if (event.event == 'warning') {
                log('Warning: ' + event.image + ': ' + event.message)
            } else if (event.event == 'error') {
                log('Error: ' + event.message)
            }
        }
    }

    static int asInt(Object value) { value instanceof Number ? ((Number) value).intValue() : 0 }

    // ------------------------------------------------------------------ project helpers

    static Object requireProject() {
        def project = QP.getProject()
        if (project == null)
            throw new CamsegProblem('Open a QuPath project first (File > Open project).')
        return project
    }

    static File projectDir(project) { Projects.getBaseDirectory(project) }

    static File camsegDir(project) { new File(projectDir(project), 'camseg') }

    /**
     * Objects this tool created: metadata created_by = qupath-camseg, else (no such metadata) a name
     * starting with "camseg" (qcamseg names them camseg Tumor, camseg tile...). The same rule
     * as Python's qupath_camseg.annotations.has_our_marker and the paquo door. QuPath 0.5+ has
     * getMetadata(); 0.4 keeps object metadata behind retrieveMetadataValue (protected in Java,
     * callable from Groovy), but its GeoJSON reader drops it (only TMA cores keep metadata there),
     * so imported objects are recognised by their name.
     */
    static boolean hasOurMarker(pathObject) {
        String createdBy = null
        try {
            createdBy = pathObject.getMetadata()?.get('created_by')
        } catch (MissingMethodException ignored) {
            try {
                createdBy = pathObject.retrieveMetadataValue('created_by')
            } catch (MissingMethodException ignored2) {
                // No object metadata at all: the name decides.
            }
        }
        if (createdBy != null)
            return createdBy == CREATED_BY
        String name = pathObject.getName()
        return name != null && name.startsWith('camseg')
    }

    /**
     * Objects this tool may replace: ours (hasOurMarker) and not reshaped or reclassified since.
     * An outline the user edited is the user's: it is exported for training and never removed.
     * Same rule as Python's qupath_camseg.annotations.is_ours.
     */
    static boolean isOurs(pathObject) { hasOurMarker(pathObject) && !isEdited(pathObject) }

    /** True when the object's shape fingerprint (measurement 'camseg fingerprint') no longer matches it. */
    static boolean isEdited(pathObject) {
        double stored = pathObject.getMeasurementList().get(FINGERPRINT)  // NaN when absent (QuPath 0.4+)
        return !Double.isNaN(stored) && !(((long) stored) in fingerprints(pathObject))
    }

    /**
     * The shape fingerprints of an object up to float rounding, as Python's fingerprint_neighbours
     * (qupath_camseg/annotations/fingerprint.py): CRC-32 of "<class>|<area bin>|<x bin>|<y bin>"
     * for the 27 neighbouring bins of ln(area) / ln(1.001) and the centroid in whole pixels.
     */
    static Set<Long> fingerprints(pathObject) {
        def roi = pathObject.getROI()
        Set<Long> out = new HashSet<Long>()
        if (roi == null || !roi.isArea())
            return out
        def geometry = roi.getGeometry()
        double area = geometry.getArea()
        if (!(area > 0))
            return out
        def centroid = geometry.getCentroid()
        long a = (long) Math.floor(Math.log(area) / Math.log1p(1e-3))
        long x = (long) Math.floor(centroid.getX()), y = (long) Math.floor(centroid.getY())
        String cls = pathObject.getPathClass()?.toString() ?: ''
        for (int da in [0, -1, 1])
            for (int dx in [0, -1, 1])
                for (int dy in [0, -1, 1]) {
                    def crc = new CRC32()
                    crc.update((cls + '|' + (a + da) + '|' + (x + dx) + '|' + (y + dy)).getBytes('UTF-8'))
                    out << crc.getValue()
                }
        return out
    }

    static List ourObjects(hierarchy) {
        return (hierarchy.getAnnotationObjects() + hierarchy.getDetectionObjects()).findAll { isOurs(it) }
    }

    /**
     * Export the user's annotations (not ours) of every project entry for training, merged with
     * what camseg/annotations/<ID>.geojson already holds (see exportEntry): nothing there is lost.
     */
    Map exportTrainingAnnotations() {
        def project = requireProject()
        File dir = new File(camsegDir(project), 'annotations')
        dir.mkdirs()
        def current = QP.getProjectEntry()
        int images = 0, annotations = 0
        List<String> skipped = []
        List<String> notes = []
        for (entry in project.getImageList()) {
            String id = entry.getID()
            def hierarchy
            try {
                // The open image may have unsaved changes: use what is on screen.
                hierarchy = (current != null && current.getID() == id) ? QP.getCurrentHierarchy() : entry.readHierarchy()
            } catch (IOException e) {
                skipped << entry.getImageName() + ' (' + e.getMessage() + ')'
                continue
            }
            def objects = hierarchy.getAnnotationObjects().findAll { !isOurs(it) }
            Map done = exportEntry(dir, id, objects)
            String extra = done.notes ? '  (' + done.notes.join('; ') + ')' : ''
            log(String.format('  %-40s %4d annotation(s) -> %s%s', entry.getImageName(), done.count, done.file.name, extra))
            notes.addAll(done.notes.collect { entry.getImageName() + ': ' + it })
            images++
            annotations += done.count
        }
        if (skipped)
            log('Skipped (could not read): ' + skipped.join(', '))
        return [images: images, annotations: annotations, folder: dir, skipped: skipped, notes: notes]
    }

    /**
     * Write <dir>/<id>.geojson = the image's annotations in QuPath, merged by object ID (UUID, the
     * GeoJSON "id") with the file's: QuPath's version wins; a file object QuPath does not show is kept
     * (written by qcamseg import-annotations or synth), unless QuPath showed it at an earlier export
     * (.<id>.qupath-ids lists those IDs) and it has since been deleted there; one with the same class
     * and outline as a QuPath object is the same object. The previous file is backed up to
     * camseg/backups/ before it is replaced; an unchanged result leaves it alone.
     */
    Map exportEntry(File dir, String id, Collection objects) {
        File target = new File(dir, id + '.geojson')
        File idsFile = new File(dir, '.' + id + '.qupath-ids')
        List notes = []
        List previous = []
        boolean unreadable = false
        if (target.isFile()) {
            try {
                previous = PathIO.readObjects(target).findAll { it.isAnnotation() && !isOurs(it) }
            } catch (Exception e) {
                unreadable = true
                notes << 'replaced an unreadable ' + target.name + ' (' + e.getMessage() + ')'
            }
        }
        if (objects.isEmpty() && previous && !unreadable && !idsFile.isFile()) {
            // Not opened in QuPath yet (or never annotated there): the file keeps what qcamseg put in it.
            return [count: previous.size(), file: target,
                    notes: ['kept the ' + previous.size() + ' in ' + target.name + '; QuPath shows none for this image']]
        }
        Set<String> shownBefore = idsFile.isFile() ? (idsFile.readLines('UTF-8')*.trim().findAll { it } as Set) : [] as Set
        Set<String> ids = objects.collect { it.getID().toString() } as Set
        Set<String> outlines = objects.collect { outline(it) } as Set
        List onlyInFile = previous.findAll { !(it.getID().toString() in ids) && !(outline(it) in outlines) }
        List deleted = onlyInFile.findAll { it.getID().toString() in shownBefore }
        List kept = onlyInFile - deleted
        if (kept)
            notes << 'kept ' + kept.size() + ' from ' + target.name + ' that QuPath does not show (added by qcamseg)'
        if (deleted)
            notes << 'dropped ' + deleted.size() + ' deleted in QuPath since the last export'
        List result = new ArrayList(objects) + kept
        File temp = new File(dir, '.' + id + '.geojson.tmp')
        QP.exportObjectsToGeoJson(result, temp.absolutePath, 'FEATURE_COLLECTION')
        if (target.isFile() && Arrays.equals(target.bytes, temp.bytes)) {
            temp.delete()
        } else {
            if (target.isFile() && (previous || unreadable)) {
                File backup = backupFile(target, 'annotations-' + id)
                if (result.size() < previous.size() || unreadable)
                    notes << 'previous file backed up to ' + backup
            }
            Files.move(temp.toPath(), target.toPath(), StandardCopyOption.REPLACE_EXISTING)
        }
        File idsTemp = new File(dir, '.' + id + '.qupath-ids.tmp')
        idsTemp.setText(ids.join('\n'), 'UTF-8')
        Files.move(idsTemp.toPath(), idsFile.toPath(), StandardCopyOption.REPLACE_EXISTING)
        return [count: result.size(), file: target, notes: notes]
    }

    /** An object's class and outline (bounds, area, points): the same annotation whatever its ID. */
    static String outline(pathObject) {
        def roi = pathObject.getROI()
        if (roi == null)
            return 'none:' + pathObject.getID()
        return [pathObject.getPathClass()?.toString(), Math.round(roi.getBoundsX()), Math.round(roi.getBoundsY()),
                Math.round(roi.getBoundsWidth()), Math.round(roi.getBoundsHeight()), Math.round(roi.getArea()),
                roi.getNumPoints()].join('|')
    }

    /** Copy `file` to <project>/camseg/backups/<prefix>.<time>.geojson; returns the copy. */
    File backupFile(File file, String prefix) {
        File folder = new File(file.parentFile.parentFile, 'backups')
        folder.mkdirs()
        String stamp = new SimpleDateFormat('yyyyMMdd-HHmmss-SSS').format(new Date())
        File backup = new File(folder, prefix + '.' + stamp + '.geojson')
        int n = 1
        while (backup.exists())
            backup = new File(folder, prefix + '.' + stamp + '-' + (n++) + '.geojson')
        Files.copy(file.toPath(), backup.toPath())
        return backup
    }

    // ------------------------------------------------------------------ models

    /** setting (a folder) > newest model in <project>/camseg/models > the last one trained/chosen. */
    static File resolveModel(String setting) {
        if (setting?.trim())
            return checkModel(new File(setting.trim()))
        def project = QP.getProject()
        if (project != null) {
            File models = new File(camsegDir(project), 'models')
            def found = (models.listFiles() ?: []).findAll { new File(it, 'model.json').isFile() }
            if (found)
                return found.max { new File(it, 'model.json').lastModified() }
        }
        String remembered = preferenceValue(PREF_MODEL)
        if (remembered && new File(remembered, 'model.json').isFile())
            return new File(remembered)
        throw new CamsegProblem('No camseg model found.\nTrain one with "camseg Train on this project", put a ' +
                'model folder (with model.json) into <project>/camseg/models/, or set MODEL_DIR at the top of this script.')
    }

    static File checkModel(File folder) {
        if (!new File(folder, 'model.json').isFile())
            throw new CamsegProblem('Not a camseg model folder (no model.json): ' + folder +
                    '\nSet MODEL_DIR at the top of this script to a folder made by "qcamseg train".')
        return folder
    }

    static String timestamp() { new SimpleDateFormat('yyyyMMdd-HHmmss').format(new Date()) }

    /**
     * Export, then `train PROJECT --out <project>/camseg/models/model-<time> [--epochs N] --door files
     * [--init NEWEST]`: the files just exported (with unsaved changes) are what it learns from, even
     * where paquo could read QuPath's saved data; with fromLastModel it fine-tunes the newest model.
     */
    File train(Integer epochs, boolean fromLastModel = false) {
        def project = requireProject()
        log('Exporting annotations for training...')
        def exported = exportTrainingAnnotations()
        if (exported.annotations == 0)
            throw new CamsegProblem('No annotations to learn from. Outline tumour regions (and other classes) ' +
                    'in some images of this project, then run this script again.')
        File out = new File(new File(camsegDir(project), 'models'), 'model-' + timestamp())
        List args = ['train', projectDir(project).absolutePath, '--out', out.absolutePath]
        if (epochs != null)
            args += ['--epochs', epochs]
        args += ['--door', 'files']
        if (fromLastModel) {
            File parent = resolveModel(null)
            log('Fine-tuning ' + parent)
            args += ['--init', parent.absolutePath]
        }
        run(args, 'camseg training')
        checkModel(out)
        setPreference(PREF_MODEL, out.absolutePath)
        return out
    }

    // ------------------------------------------------------------------ predict and import

    /** The image file behind the current image, for predicting outside a project. */
    static File imageFile(imageData) {
        def uris = imageData.getServer().getURIs()
        def uri = uris ? uris.iterator().next() : null
        if (uri == null || uri.scheme != 'file')
            throw new CamsegProblem('camseg can only read local image files; this image comes from ' + uri)
        return new File(uri)
    }

    /**
     * Predict the current image (inside `roiObjects` when given), then replace this tool's objects.
     * In a project: `predict PROJECT --model M --images ENTRY_ID --no-project-write --door files`; else `predict SLIDE --model M`.
     */
    Map predictCurrentImage(String modelSetting, Collection roiObjects) {
        def imageData = QP.getCurrentImageData()
        if (imageData == null)
            throw new CamsegProblem('Open an image first.')
        File model = resolveModel(modelSetting)
        def project = QP.getProject()
        def entry = QP.getProjectEntry()
        List args
        File expected
        if (project != null && entry != null) {
            File base = projectDir(project)
            // --no-project-write: the objects go into the open image here, not behind QuPath's back.
            args = ['predict', base.absolutePath, '--model', model.absolutePath, '--images', entry.getID(),
                    '--no-project-write', '--door', 'files']
            expected = new File(base, 'camseg/predictions/' + entry.getID() + '.geojson')
        } else {
            // No project: the results go to camseg/ beside the slide (predict's default).
            File slide = imageFile(imageData)
            args = ['predict', slide.absolutePath, '--model', model.absolutePath]
            expected = null
        }
        File roiFile = null
        if (roiObjects) {
            roiFile = File.createTempFile('camseg-roi-', '.geojson')
            QP.exportObjectsToGeoJson(roiObjects, roiFile.absolutePath, 'FEATURE_COLLECTION')
            args += ['--roi', roiFile.absolutePath]
            log('Predicting inside ' + roiObjects.size() + ' selected annotation(s)')
        }
        args += ['--progress', 'jsonl']
        Map done = null
        Closure printer = progressPrinter('Predicting')
        try {
            run(args, 'camseg prediction') { Map event ->
                printer(event)
                if (event.event in ['done', 'skip'])
                    done = event
            }
        } finally {
            roiFile?.delete()
        }
        String reported = done?.outputs instanceof Map ? done.outputs.geojson : null
        File geojson = reported ? new File(reported) : expected
        Map imported = importPredictions(geojson)
        return imported + [model: model, geojson: geojson, outputs: done?.outputs]
    }

    /** Replace this tool's objects in the current image by those in `geojson`; never touch others (nor the ones the user edited). */
    Map importPredictions(File geojson) {
        if (geojson == null || !geojson.isFile())
            throw new CamsegProblem('No predictions found at ' + geojson + '\nRun "camseg Predict current image" ' +
                    'first, or copy <entryID>.geojson from the machine that ran qcamseg into <project>/camseg/predictions/.')
        def objects = PathIO.readObjects(geojson)
        def hierarchy = QP.getCurrentHierarchy()
        if (hierarchy == null)
            throw new CamsegProblem('Open an image first.')
        def previous = ourObjects(hierarchy)
        // The analysed tissue is shown, not edited by accident: locked (unlock it in QuPath to change it).
        objects.findAll { it.getPathClass()?.toString() == TISSUE_CLASS }.each { it.setLocked(true) }
        int kept = hierarchy.getAnnotationObjects().count { hasOurMarker(it) && isEdited(it) }
        QP.removeObjects(previous, true)
        QP.addObjects(objects)
        QP.fireHierarchyUpdate()
        log('Removed ' + previous.size() + ' previous camseg object(s); added ' + objects.size() + ' from ' + geojson +
                (kept ? '; kept ' + kept + ' camseg outline(s) you edited (they are yours now)' : ''))
        return [removed: previous.size(), added: objects.size(), kept: kept]
    }

    // ------------------------------------------------------------------ corrections

    static boolean isReviewBox(pathObject) { String.valueOf(pathObject.getName()).startsWith(REVIEW_NAME) }

    /** camseg's region outlines (camseg Tumor...), edited or not; not the Review boxes. */
    static boolean isPrediction(pathObject) { pathObject.isAnnotation() && hasOurMarker(pathObject) && !isReviewBox(pathObject) }

    static Object currentHierarchy() {
        def hierarchy = QP.getCurrentHierarchy()
        if (hierarchy == null)
            throw new CamsegProblem('Open an image first.')
        return hierarchy
    }

    /** Replace camseg outlines (the selected ones, else all of the image) by plain annotations of their class. */
    Map acceptPredictions(Collection selected) {
        def hierarchy = currentHierarchy()
        List chosen = (selected ?: []).findAll { isPrediction(it) }.toList()
        if (selected && !chosen)
            throw new CamsegProblem('None of the selected objects is a camseg outline. Select the camseg Tumor ' +
                    'outlines to accept (or select nothing to accept all of them), then run this script again.')
        if (!selected)
            chosen = hierarchy.getAnnotationObjects().findAll { isPrediction(it) }.toList()
        if (!chosen)
            throw new CamsegProblem('This image has no camseg outlines to accept. Run "camseg Predict current ' +
                    'image" or "camseg Import predictions" first.')
        List accepted = chosen.collect { PathObjects.createAnnotationObject(it.getROI(), it.getPathClass()) }
        QP.removeObjects(chosen, true)
        QP.addObjects(accepted)
        QP.fireHierarchyUpdate()
        QP.selectObjects(accepted)
        log('Accepted ' + accepted.size() + ' camseg outline(s) as your own annotations: they train, and predict never replaces them')
        return [accepted: accepted.size()]
    }

    /** Give the selected area annotations the class Normal (trains as background); camseg's become plain annotations. */
    Map markAsNormal(Collection selected) {
        List regions = (selected ?: []).findAll { it.isAnnotation() && it.hasROI() && it.getROI().isArea() }.toList()
        if (!regions)
            throw new CamsegProblem('Select the region to mark as normal first: draw an outline over tissue without ' +
                    'tumour (or click a camseg outline or Review box), then run this script again.')
        def normal = QP.getPathClass(NORMAL_CLASS)
        List ours = regions.findAll { hasOurMarker(it) }
        List mine = regions.findAll { !hasOurMarker(it) }
        mine.each { it.setPathClass(normal) }
        List replaced = ours.collect { PathObjects.createAnnotationObject(it.getROI(), normal) }
        if (ours) {
            QP.removeObjects(ours, true)
            QP.addObjects(replaced)
        }
        QP.fireHierarchyUpdate()
        QP.selectObjects(mine + replaced)
        log('Marked ' + regions.size() + ' region(s) as ' + NORMAL_CLASS + ': they train as tumour-free tissue')
        return [marked: regions.size(), replaced: ours.size()]
    }

    static double reviewRank(pathObject) {
        double rank = pathObject.getMeasurementList().get(REVIEW_RANK)
        if (!Double.isNaN(rank))
            return rank
        def digits = String.valueOf(pathObject.getName()) =~ /(\d+)\s*$/
        return digits.find() ? Double.parseDouble(digits.group(1)) : Double.MAX_VALUE
    }

    /**
     * Select the next camseg Review box (by rank, after the selected one or the last one shown for
     * this image) and centre `viewer` on it (none in batch mode). Returns [rank:, total:, box:].
     */
    Map reviewNext(viewer) {
        def hierarchy = currentHierarchy()
        List boxes = hierarchy.getAnnotationObjects().findAll { hasOurMarker(it) && isReviewBox(it) }.toList().sort { reviewRank(it) }
        if (!boxes)
            throw new CamsegProblem('This image has no camseg Review boxes. "camseg Predict current image" (or ' +
                    'qcamseg predict, then "camseg Import predictions") adds them where the model is least sure.')
        String image = QP.getProjectEntry()?.getID() ?: QP.getCurrentImageData()?.getServerPath()
        def selected = hierarchy.getSelectionModel().getSelectedObject()
        double current = selected in boxes ? reviewRank(selected) : lastReviewed(image)
        def next = boxes.find { reviewRank(it) > current } ?: boxes[0]
        hierarchy.getSelectionModel().setSelectedObject(next)
        if (viewer != null)
            viewer.centerROI(next.getROI())
        setPreference(PREF_REVIEWED, image + '\t' + reviewRank(next))
        double u = next.getMeasurementList().get('uncertainty')
        log(String.format('%s (%d of %d)%s', next.getName(), boxes.indexOf(next) + 1, boxes.size(),
                Double.isNaN(u) ? '' : String.format(', uncertainty %.2f', u)))
        return [rank: reviewRank(next), total: boxes.size(), box: next]
    }

    /** The rank of the Review box last shown for `image` (0: none yet). */
    static double lastReviewed(String image) {
        String value = preferenceValue(PREF_REVIEWED)
        int tab = value ? value.lastIndexOf('\t') : -1
        if (tab < 0 || value.substring(0, tab) != image)
            return 0
        try {
            return Double.parseDouble(value.substring(tab + 1))
        } catch (NumberFormatException ignored) {
            return 0
        }
    }

    // ------------------------------------------------------------------ reporting

    boolean inBatch() {
        try {
            def size = script.getProperty('qupath.script.batchSize')
            return size instanceof Number && size.intValue() > 1
        } catch (MissingPropertyException ignored) {
            return false
        }
    }

    /** Show a problem to the user (a dialog; a notification when running for a whole project). */
    void report(String title, Throwable problem) {
        String message = problem instanceof CamsegProblem ? problem.message : problem.toString()
        log('ERROR: ' + message)
        if (problem instanceof InterruptedException)
            dialogs.showWarningNotification(title, problem.message)
        else if (inBatch())
            dialogs.showErrorNotification(title, message)
        else
            dialogs.showErrorMessage(title, message)
    }

    /** Run `body`; report problems to the user, then rethrow so QuPath marks the script as failed. */
    def guard(String title, Closure body) {
        try {
            return body()
        } catch (Throwable problem) {
            report(title, problem)
            throw problem
        }
    }
}

// Opened on its own (it is listed in the scripts menu), this file only explains itself.
def running = binding.hasVariable('qupath.script.file') ? binding.getVariable('qupath.script.file') : null
if (running != null && running.toString().endsWith('camseg_lib.groovy'))
    println 'camseg_lib.groovy is a helper for the other camseg scripts; run one of those instead.'

return Camseg
